# Google Cloud-only variables. The shared ones (images, limits, replica bounds) are in
# shared_variables.tf, a link to ../shared/variables.tf.

variable "project_id" {
  description = "Google Cloud project to deploy into."
  type        = string
}

variable "region" {
  description = "Region of Cloud Run, Memorystore and the NATS servers (for example europe-west1)."
  type        = string
}

variable "domain" {
  description = "Domain name of the API; the load balancer gets a Google-managed certificate for it (point its A record at the `ip_address` output)."
  type        = string
}

variable "subnet_cidr" {
  description = "Range of the VPC subnet shared by the NATS servers and the Cloud Run instances (Direct VPC egress)."
  type        = string
  default     = "10.20.0.0/20"
  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr must be a CIDR range."
  }
}

variable "nats_nodes" {
  description = "NATS servers (one per zone, each with its own persistent disk)."
  type        = number
  default     = 3
  validation {
    condition     = contains([1, 3, 5], var.nats_nodes)
    error_message = "nats_nodes must be 1, 3 or 5."
  }
}

variable "nats_image" {
  description = "nats-server container image the NATS VMs run: the server version the test suite runs."
  type        = string
  default     = "nats:2.15.1-alpine"
}

variable "nats_boot_image_family" {
  description = "Container-Optimized OS image family of the NATS VMs, read when a VM is created; a newer release in the family does not replace running VMs (roll them one at a time, see the README)."
  type        = string
  default     = "cos-stable"
}

variable "nats_machine_type" {
  description = "Machine type of each NATS server."
  type        = string
  default     = "e2-standard-2"
}

variable "nats_disk_type" {
  description = "Persistent disk type of JetStream's file store."
  type        = string
  default     = "pd-ssd"
}

variable "nats_disk_size_gb" {
  description = "Persistent disk per NATS server, in GB."
  type        = number
  default     = 50
}

variable "redis_tier" {
  description = "Memorystore for Redis tier: STANDARD_HA (a replica in another zone) or BASIC."
  type        = string
  default     = "STANDARD_HA"
  validation {
    condition     = contains(["STANDARD_HA", "BASIC"], var.redis_tier)
    error_message = "redis_tier must be STANDARD_HA or BASIC."
  }
}

variable "redis_memory_size_gb" {
  description = "Memorystore capacity in GB."
  type        = number
  default     = 5
}

variable "setup_timeout_seconds" {
  description = "How long the qmill-setup job may keep trying (the NATS VMs of a first apply boot meanwhile) before the apply fails."
  type        = number
  default     = 600
}

variable "redis_version" {
  description = "Memorystore for Redis version."
  type        = string
  default     = "REDIS_7_2"
}

variable "function_cpu" {
  description = "CPU of each function instance (its memory is the shared module's function_memory_mib, from function_workers)."
  type        = string
  default     = "1"
}

variable "function_concurrency" {
  description = "Requests one function instance serves at once (the functions are asyncio; long polls wait on Redis)."
  type        = number
  default     = 80
}

variable "autoscaler_enabled" {
  description = "Deploy CREMA (Cloud Run External Metrics Autoscaling, KEDA's scalers on Cloud Run) to scale the worker pool on the consumer's pending count. False: the pool keeps the instance count you set."
  type        = bool
  default     = true
}

variable "autoscaler_image" {
  description = "CREMA's prebuilt image, at its preferred release tag (1.2: KEDA 2.20; 1.0 and 1.1 are legacy releases without fixes, and images before 2026-04-29 leak memory)."
  type        = string
  default     = "us-central1-docker.pkg.dev/cloud-run-oss-images/crema-v1/autoscaler:1.2"
}

variable "autoscaler_base_image" {
  description = "Runtime base image CREMA's image is built on (it is built FROM scratch for automatic base image updates)."
  type        = string
  default     = "us-central1-docker.pkg.dev/serverless-runtimes/google-24/runtimes/java25"
}

variable "autoscaler_polling_seconds" {
  description = "How often CREMA reads the queue depth and sets the worker pool's instance count."
  type        = number
  default     = 15
}

variable "deletion_protection" {
  description = "Refuse to destroy the Cloud Run services, the worker pool and Memorystore."
  type        = bool
  default     = true
}

variable "labels" {
  description = "Labels of every resource that takes them."
  type        = map(string)
  default     = {}
}

variable "metrics_sidecar" {
  description = "Run Google Cloud Managed Service for Prometheus's Cloud Run sidecar (run-gmp-sidecar) next to every function and worker, scraping their /metrics into Cloud Monitoring (metrics.tf). False: no sidecar, no metrics leave the instances."
  type        = bool
  default     = true
}

variable "metrics_sidecar_image" {
  description = "The run-gmp-sidecar collector image, pinned to a release (GoogleCloudPlatform/run-gmp-sidecar tag 1.7.0)."
  type        = string
  default     = "us-docker.pkg.dev/cloud-ops-agents-artifacts/cloud-run-gmp-sidecar/cloud-run-gmp-sidecar:1.7.0"
}
