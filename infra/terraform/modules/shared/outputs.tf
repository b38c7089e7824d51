output "functions_image" {
  description = "Image reference of the HTTP functions."
  value       = local.functions_image
}

output "worker_image" {
  description = "Image reference of the worker."
  value       = local.worker_image
}

output "function_env" {
  description = "QMILL_* settings of the function containers (without the NATS and Redis URLs)."
  value       = local.function_env
}

output "worker_env" {
  description = "QMILL_* settings of the worker container (without the NATS and Redis URLs)."
  value       = local.worker_env
}

output "function_memory_mib" {
  description = "Memory of a function container, in MiB: the arbiter plus function_workers parse processes (measured, see constants.tf)."
  value       = local.function_memory_mib
}

output "version_label" {
  description = "image_tag as a valid Kubernetes label value (app.kubernetes.io/version): digest dropped, at most 63 characters, alphanumeric at both ends."
  value       = local.version_label
}

output "nats_stream_replicas" {
  description = "[nats] stream_replicas in effect: nats_stream_replicas, at most nats_cluster_size."
  value       = local.nats_stream_replicas
}

output "function_workers" {
  description = "WORKERS for functions-framework."
  value       = var.function_workers
}

output "worker_memory_bytes" {
  description = "Settings.worker_memory_bytes for these settings."
  value       = local.worker_memory_bytes
}

output "worker_memory_mib" {
  description = "The worker container's memory request and limit, in MiB."
  value       = local.worker_memory_mib

  precondition {
    condition     = var.platform_max_memory_mib == null || local.worker_memory_mib <= coalesce(var.platform_max_memory_mib, 0)
    error_message = "A worker needs ${local.worker_memory_mib} MiB (worker_max_concurrent_tasks x 16 x 2^max_qubits bytes plus overhead), more than the platform's ${coalesce(var.platform_max_memory_mib, 0)} MiB: lower max_qubits or worker_max_concurrent_tasks."
  }
}

output "worker_grace_period_seconds" {
  description = "[worker] grace_period_seconds the worker gets (capped below the platform's stop timeout)."
  value       = local.worker_grace_period_seconds
}

output "memory_budget_mb" {
  description = "[worker] memory_budget_mb: every slot can hold a statevector of max_qubits."
  value       = local.memory_budget_mb
}

output "auth_enabled" {
  description = "[auth] enabled."
  value       = var.auth_enabled
}

output "api_key_hashes_json" {
  description = "QMILL_AUTH__API_KEY_HASHES, for the targets' secrets."
  value       = jsonencode(var.api_key_hashes)
  sensitive   = true
}

output "worker_cpu" {
  description = "CPU cores per worker replica."
  value       = local.worker_cpu

  precondition {
    condition     = local.worker_cpu >= local.worker_min_cpu
    error_message = "A worker needs ${local.worker_memory_mib} MiB, which the platform gives only with at least ${local.worker_min_cpu} CPUs (Cloud Run: over 4 GiB 2, over 8 GiB 4, over 16 GiB 6, over 24 GiB 8): set worker_cpu = ${local.worker_min_cpu}, or lower max_qubits or worker_max_concurrent_tasks."
  }
}

output "function_min_cpu" {
  description = "The fewest CPUs the platform allows for function_memory_mib (0: no rule)."
  value       = local.function_min_cpu
}

output "termination_grace_period_seconds" {
  description = "The worker pod's termination grace period: longer than [worker] grace_period_seconds."
  value       = local.termination_grace_period_seconds
}

output "tasks_per_replica" {
  description = "Queue depth per worker replica the autoscaler aims for."
  value       = local.tasks_per_replica
}

output "http_paths" {
  description = "The paths an Ingress or URL map routes, with their match type and function."
  value       = local.http_paths
}

output "routes" {
  description = "The routes (method, path or prefix, function), as in qmill.server.constants.ROUTES."
  value       = local.routes
}

output "nats_stream" {
  description = "The JetStream stream the submit function creates."
  value       = local.nats_stream
}

output "worker_consumer" {
  description = "The workers' durable pull consumer (the normal lane)."
  value       = local.worker_consumer
}

output "worker_bulk_consumer" {
  description = "The workers' durable pull consumer of the bulk lane."
  value       = local.worker_bulk_consumer
}

output "worker_replicas" {
  description = "Replica bounds of the worker."
  value       = { min = var.worker_min_replicas, max = var.worker_max_replicas }
}

output "function_replicas" {
  description = "Replica bounds of each function."
  value       = { min = var.function_min_replicas, max = var.function_max_replicas }
}
