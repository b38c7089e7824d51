output "namespace" {
  description = "Namespace of the qmill objects."
  value       = local.namespace
}

output "nats_url" {
  description = "NATS URL the containers use, without the credentials (those are in the Secret <prefix>-settings)."
  value       = "nats://${local.nats_host}:${local.nats_client_port}"
}

output "nats_stream_replicas" {
  description = "Replicas of the task stream: nats_stream_replicas clamped to nats_replicas."
  value       = module.shared.nats_stream_replicas
}

output "function_memory_mib" {
  description = "Memory request and limit of each function pod, in MiB."
  value       = module.shared.function_memory_mib
}

output "ingress_name" {
  description = "Name of the Ingress; its address is the API's."
  value       = kubernetes_ingress_v1.api.metadata[0].name
}

output "worker_memory_mib" {
  description = "Memory request and limit of each worker pod, in MiB."
  value       = module.shared.worker_memory_mib
}

output "images" {
  description = "The images the Deployments run."
  value       = { functions = module.shared.functions_image, worker = module.shared.worker_image }
}
