# Set by the target module, not by users (these are not in variables.tf, which the
# targets link in): what the platform imposes on the worker.

variable "platform_stop_seconds" {
  description = "Seconds the platform waits between SIGTERM and SIGKILL when it fixes them (Cloud Run: 10); null when the module sets the termination grace period itself (Kubernetes)."
  type        = number
  default     = null
}

variable "platform_max_memory_mib" {
  description = "Most memory one worker instance may have on the platform; null: no fixed bound."
  type        = number
  default     = null
}

variable "platform_min_cpu_over_mib" {
  description = "The platform's CPU-per-memory rule: memory in MiB (as a string key) above which an instance needs at least that many CPUs (Cloud Run: over 4096 MiB 2, over 8192 4, ...); empty: no rule."
  type        = map(number)
  default     = {}
}

variable "nats_cluster_size" {
  description = "NATS servers in the target's cluster (Kubernetes: nats_replicas; Cloud Run: nats_nodes). The task stream cannot have more replicas than servers: JetStream refuses to create it, and every submit fails."
  type        = number
  validation {
    condition     = var.nats_cluster_size >= 1 && floor(var.nats_cluster_size) == var.nats_cluster_size
    error_message = "nats_cluster_size must be an integer >= 1."
  }
}

locals {
  # The fewest CPUs the platform allows for the worker's and the function's memory.
  worker_min_cpu   = max(concat([0], [for mib, cpu in var.platform_min_cpu_over_mib : cpu if local.worker_memory_mib > tonumber(mib)])...)
  function_min_cpu = max(concat([0], [for mib, cpu in var.platform_min_cpu_over_mib : cpu if local.function_memory_mib > tonumber(mib)])...)

  # [nats] stream_replicas as the cluster can hold it: R3 on one server is refused.
  nats_stream_replicas = min(var.nats_stream_replicas, var.nats_cluster_size)

  # Leave the worker this many seconds between its own deadline and SIGKILL.
  stop_margin_seconds = 2
  # By default the longest a simulation may run: a scale-in or rollout lets running
  # tasks finish instead of handing them back half done.
  worker_grace_wanted = coalesce(var.worker_grace_period_seconds, var.max_execution_seconds)
  worker_grace_period_seconds = (
    var.platform_stop_seconds == null
    ? local.worker_grace_wanted
    : min(local.worker_grace_wanted, var.platform_stop_seconds - local.stop_margin_seconds)
  )
  # Longer than the worker's own grace period: time to release unfinished tasks and close.
  termination_grace_period_seconds = (
    var.platform_stop_seconds == null
    ? ceil(local.worker_grace_period_seconds) + 15
    : var.platform_stop_seconds
  )
}
