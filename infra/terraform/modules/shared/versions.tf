# Built-in constructs only: no provider, so `terraform init -backend=false && terraform
# validate` (and even `terraform plan`) work without the provider registry.
terraform {
  # 1.9: validation rules that refer to other variables and locals.
  required_version = ">= 1.9"
}
