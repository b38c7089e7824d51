# The variables every target shares: images, versions, limits and replica bounds.
# The kubernetes and cloudrun modules link this file in (shared_variables.tf), so a
# user sets the same names on either target; each passes them on to this module.
# Bounds mirror src/qmill/server/config.py (tests/infra/test_terraform.py checks them).

variable "name_prefix" {
  description = "Prefix of every resource name (Kubernetes objects, Cloud Run services)."
  type        = string
  default     = "qmill"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,19}$", var.name_prefix))
    error_message = "name_prefix must be 1-20 characters of a-z, 0-9 and '-', starting with a letter."
  }
}

variable "image_registry" {
  description = "Registry and path the images are pushed to, without a trailing slash (for example europe-docker.pkg.dev/my-project/qmill). Empty means Docker Hub / the node's default."
  type        = string
  default     = ""
  validation {
    condition     = var.image_registry == "" || can(regex("^[a-z0-9][a-z0-9.:_/-]*[a-z0-9]$", var.image_registry))
    error_message = "image_registry must be empty or a registry path without a trailing slash."
  }
}

variable "image_tag" {
  description = "Tag of both images: the project version (pyproject.toml) or a digest suffix such as 0.1.0@sha256:..."
  type        = string
  default     = "0.1.0"
  validation {
    condition     = can(regex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(@sha256:[a-f0-9]{64})?$", var.image_tag))
    error_message = "image_tag must be a valid image tag, optionally followed by @sha256:<digest>."
  }
}

variable "functions_image_name" {
  description = "Image that holds the three HTTP functions (submit, result, health)."
  type        = string
  default     = "qmill-functions"
}

variable "worker_image_name" {
  description = "Image that holds qmill-worker and qiskit-aer."
  type        = string
  default     = "qmill-worker"
}

variable "max_qubits" {
  description = "[limits] max_qubits: widest statevector circuit accepted. A statevector takes 16 * 2^n bytes: the worker's memory budget holds worker_max_concurrent_tasks of them."
  type        = number
  default     = 26
  validation {
    condition     = var.max_qubits >= 1 && var.max_qubits <= 40 && floor(var.max_qubits) == var.max_qubits
    error_message = "max_qubits must be an integer from 1 to 40."
  }
}

variable "max_shots" {
  description = "[limits] max_shots."
  type        = number
  default     = 100000
  validation {
    condition     = var.max_shots >= 1 && floor(var.max_shots) == var.max_shots
    error_message = "max_shots must be an integer >= 1."
  }
}

variable "max_execution_seconds" {
  description = "[limits] max_execution_seconds: a simulation that runs longer fails with `timeout`."
  type        = number
  default     = 120
  validation {
    condition     = var.max_execution_seconds > 0
    error_message = "max_execution_seconds must be > 0."
  }
}

variable "worker_max_concurrent_tasks" {
  description = "[worker] max_concurrent_tasks per worker replica. Never 0 in a container: os.cpu_count() sees the node's cores, not the container's limit."
  type        = number
  default     = 2
  validation {
    condition     = var.worker_max_concurrent_tasks >= 1 && var.worker_max_concurrent_tasks <= 1024 && floor(var.worker_max_concurrent_tasks) == var.worker_max_concurrent_tasks
    error_message = "worker_max_concurrent_tasks must be an integer from 1 to 1024."
  }
}

variable "worker_executor" {
  description = "[worker] executor: process (killable child processes, the default) or thread."
  type        = string
  default     = "process"
  validation {
    condition     = contains(["process", "thread"], var.worker_executor)
    error_message = "worker_executor must be process or thread."
  }
}

variable "worker_grace_period_seconds" {
  description = "[worker] grace_period_seconds: on SIGTERM, how long running tasks may finish before the worker releases them (hands them back, not counted as a failed attempt). null: max_execution_seconds, so a scale-in lets a running simulation finish where the platform allows it (Kubernetes); Cloud Run caps it at 8 s. The platform's termination grace period is set longer."
  type        = number
  default     = null
  validation {
    condition     = var.worker_grace_period_seconds == null || try(var.worker_grace_period_seconds >= 0 && var.worker_grace_period_seconds <= 3600, false)
    error_message = "worker_grace_period_seconds must be from 0 to 3600."
  }
}

variable "worker_max_attempts" {
  description = "[worker] max_attempts per task."
  type        = number
  default     = 3
  validation {
    condition     = var.worker_max_attempts >= 1 && var.worker_max_attempts <= 20 && floor(var.worker_max_attempts) == var.worker_max_attempts
    error_message = "worker_max_attempts must be an integer from 1 to 20."
  }
}

variable "worker_cpu" {
  description = "CPU cores per worker replica; null means one per concurrent task."
  type        = number
  default     = null
  validation {
    condition     = var.worker_cpu == null || try(var.worker_cpu > 0, false)
    error_message = "worker_cpu must be null or > 0."
  }
}

variable "worker_memory_headroom_mib" {
  description = "MiB added to the computed worker memory (Settings.worker_memory_bytes) for the container limit."
  type        = number
  default     = 256
  validation {
    condition     = var.worker_memory_headroom_mib >= 0
    error_message = "worker_memory_headroom_mib must be >= 0."
  }
}

variable "worker_min_replicas" {
  description = "Fewest worker replicas (0 lets the autoscaler stop every worker while the queue is empty)."
  type        = number
  default     = 0
  validation {
    condition     = var.worker_min_replicas >= 0 && floor(var.worker_min_replicas) == var.worker_min_replicas
    error_message = "worker_min_replicas must be an integer >= 0."
  }
}

variable "worker_max_replicas" {
  description = "Most worker replicas the autoscaler may start."
  type        = number
  default     = 10
  validation {
    condition     = var.worker_max_replicas >= 1 && var.worker_max_replicas >= var.worker_min_replicas && floor(var.worker_max_replicas) == var.worker_max_replicas
    error_message = "worker_max_replicas must be an integer >= 1 and >= worker_min_replicas."
  }
}

variable "worker_tasks_per_replica" {
  description = "Queue depth (pending + unacknowledged tasks) per worker replica the autoscaler aims for; null means worker_max_concurrent_tasks."
  type        = number
  default     = null
  validation {
    condition     = var.worker_tasks_per_replica == null || try(var.worker_tasks_per_replica >= 1, false)
    error_message = "worker_tasks_per_replica must be null or >= 1."
  }
}

variable "function_min_replicas" {
  description = "Fewest replicas of each HTTP function. 2: one replica is a single point of failure (a node drain, a zone, a crashed instance stops the API), and a cold start of the submit function (qiskit's import) takes seconds."
  type        = number
  default     = 2
  validation {
    condition     = var.function_min_replicas >= 0 && floor(var.function_min_replicas) == var.function_min_replicas
    error_message = "function_min_replicas must be an integer >= 0."
  }
}

variable "function_max_replicas" {
  description = "Most replicas of each HTTP function."
  type        = number
  default     = 10
  validation {
    condition     = var.function_max_replicas >= 1 && var.function_max_replicas >= var.function_min_replicas && floor(var.function_max_replicas) == var.function_max_replicas
    error_message = "function_max_replicas must be an integer >= 1 and >= function_min_replicas."
  }
}

variable "function_workers" {
  description = "Server worker processes per function container (functions-framework's WORKERS)."
  type        = number
  default     = 2
  validation {
    condition     = var.function_workers >= 1 && var.function_workers <= 64 && floor(var.function_workers) == var.function_workers
    error_message = "function_workers must be an integer from 1 to 64."
  }
}

variable "nats_stream_replicas" {
  description = "[nats] stream_replicas: copies of the task stream in the NATS cluster (3 on a 3-node cluster); lowered to the cluster's size when it has fewer servers."
  type        = number
  default     = 3
  validation {
    condition     = contains([1, 3, 5], var.nats_stream_replicas)
    error_message = "nats_stream_replicas must be 1, 3 or 5."
  }
}

variable "result_ttl_seconds" {
  description = "[redis] result_ttl_seconds: how long a finished task and its result are kept."
  type        = number
  default     = 604800
  validation {
    condition     = var.result_ttl_seconds >= 60
    error_message = "result_ttl_seconds must be >= 60."
  }
}

variable "log_level" {
  description = "[log] level."
  type        = string
  default     = "INFO"
  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR"], var.log_level)
    error_message = "log_level must be DEBUG, INFO, WARNING or ERROR."
  }
}

variable "auth_enabled" {
  description = "[auth] enabled: require an API key on every request."
  type        = bool
  default     = true
}

variable "api_key_hashes" {
  description = "[auth] api_key_hashes: SHA-256 hex digests of the API keys (`qmill key new` prints a key and its hash). Delivered from a Kubernetes Secret or Secret Manager."
  type        = list(string)
  default     = []
  sensitive   = true
  validation {
    condition     = alltrue([for digest in var.api_key_hashes : can(regex("^[0-9a-f]{64}$", digest))])
    error_message = "api_key_hashes must be lowercase SHA-256 hex digests (64 characters)."
  }
  validation {
    condition     = !var.auth_enabled || length(var.api_key_hashes) > 0
    error_message = "auth_enabled needs at least one entry in api_key_hashes (or set auth_enabled = false)."
  }
}

variable "allowed_hosts" {
  description = "[server] allowed_hosts: the host names the API answers to (any other Host header gets 421, a POST or DELETE from another Origin 403). \"*\" (the default) allows any: auth is on and the load balancer or Ingress picks the name; list the domain (\".example.com\" for it and its subdomains) to refuse the rest."
  type        = list(string)
  default     = ["*"]
  validation {
    condition     = length(var.allowed_hosts) > 0 && alltrue([for host in var.allowed_hosts : can(regex("^[^\\s/@]+$", host))])
    error_message = "allowed_hosts needs at least one host name (or \"*\"), without scheme or path."
  }
}

variable "extra_env" {
  description = "More qmill settings for every container, as QMILL_<SECTION>__<KEY> = value. Only names qmill reads are accepted; secrets do not belong here."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for name in keys(var.extra_env) : contains(local.known_env, name)])
    error_message = "extra_env has names qmill does not read: ${join(", ", [for name in keys(var.extra_env) : name if !contains(local.known_env, name)])}."
  }
  validation {
    condition     = length(setintersection(keys(var.extra_env), local.reserved_env)) == 0
    error_message = "extra_env may not set ${join(", ", local.reserved_env)}: the modules derive them (the Redis URL from a secret, the sizes from the variables above)."
  }
}
