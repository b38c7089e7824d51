# Everything the two charts' values follow from. The parent module (../) passes its own
# variables and names on; tests/infra/test_charts.py plans this module offline (it has
# no provider) and lints and renders the vendored charts (infra/charts) with its outputs.

variable "nats_name" {
  description = "Release and fullname of the NATS chart (its pods are <name>-0, -1, ...)."
  type        = string
}

variable "nats_replicas" {
  description = "NATS servers in the cluster."
  type        = number
}

variable "nats_image_tag" {
  description = "nats-server image tag."
  type        = string
}

variable "nats_storage_size" {
  description = "JetStream file store volume per server."
  type        = string
}

variable "nats_memory_mib" {
  description = "Memory request and limit of each NATS container, in MiB."
  type        = number
}

variable "nats_user" {
  description = "The one NATS user every qmill process connects as."
  type        = string
}

variable "nats_password_secret" {
  description = "Secret holding the NATS password (key nats_password_key)."
  type        = string
}

variable "nats_password_key" {
  description = "Key of the NATS password in nats_password_secret."
  type        = string
}

variable "spread_across_zones" {
  description = "Refuse to schedule two NATS servers in one zone while another zone has fewer."
  type        = bool
}

variable "storage_class" {
  description = "StorageClass of the volumes; null: the cluster's default."
  type        = string
}

variable "redis_name" {
  description = "Release and fullname of the Valkey chart."
  type        = string
}

variable "valkey_image_tag" {
  description = "Valkey image tag (empty: the chart's appVersion)."
  type        = string
}

variable "redis_storage_size" {
  description = "Valkey data volume."
  type        = string
}

variable "redis_memory_mib" {
  description = "Memory request and limit of the Valkey container, in MiB."
  type        = number
}

variable "valkey_users_secret" {
  description = "Secret holding the password of Valkey's ACL user default (key default)."
  type        = string
}
