# qmill on any conformant Kubernetes cluster (GKE, EKS, AKS, k3s). Copy this file,
# then: terraform init && terraform apply -var redis_password=... (see the README).
terraform {
  required_version = ">= 1.9"

  required_providers {
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "~> 2.36"
    }
    helm = {
      source  = "hashicorp/helm"
      version = "~> 3.0"
    }
    # The NATS password the module generates.
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }

  # The state holds redis_password and the NATS password the module generates: keep it in
  # an encrypted, access-controlled remote backend, not on a laptop. For example one of
  #   backend "gcs" { bucket = "acme-tf-state", prefix = "qmill" }
  #   backend "s3" { bucket = "acme-tf-state", key = "qmill.tfstate", region = "eu-west-1", encrypt = true }
  #   backend "kubernetes" { secret_suffix = "qmill", config_path = "~/.kube/config" }
}

variable "kubeconfig" {
  description = "Path of the kubeconfig file."
  type        = string
  default     = "~/.kube/config"
}

variable "kube_context" {
  description = "Context in the kubeconfig (null: the current one)."
  type        = string
  default     = null
}

variable "api_key_hashes" {
  description = "SHA-256 hex digests of the API keys (`qmill key new`)."
  type        = list(string)
  sensitive   = true
}

variable "image_registry" {
  description = "Where qmill-functions and qmill-worker are pushed (for example ghcr.io/acme)."
  type        = string
}

variable "redis_password" {
  description = "Password of the in-cluster Valkey (Redis) server."
  type        = string
  sensitive   = true
}

variable "ingress_host" {
  description = "Host name of the API (null: any host)."
  type        = string
  default     = null
}

provider "kubernetes" {
  config_path    = var.kubeconfig
  config_context = var.kube_context
}

provider "helm" {
  kubernetes = {
    config_path    = var.kubeconfig
    config_context = var.kube_context
  }
}

module "qmill" {
  source = "../../modules/kubernetes"

  image_registry = var.image_registry
  api_key_hashes = var.api_key_hashes
  redis_password = var.redis_password
  ingress_host   = var.ingress_host

  # Each worker runs 2 simulations of up to 26 qubits at once: 3264 MiB per pod.
  worker_max_concurrent_tasks = 2
  max_qubits                  = 26
  # Workers scale from zero: the setup Job creates the stream and consumers KEDA reads.
  worker_min_replicas = 0
  worker_max_replicas = 10

  # Three NATS servers, each on its own node (fewer nodes: nats_replicas = 1, and the
  # stream's replicas follow). On a multi-zone cluster, one per zone:
  nats_replicas       = 3
  spread_across_zones = false
}

output "namespace" {
  value = module.qmill.namespace
}

output "worker_memory_mib" {
  value = module.qmill.worker_memory_mib
}
