output "namespace" {
  description = "Namespace of the qmill objects."
  value       = local.namespace
}

output "nats_url" {
  description = "NATS URL the containers use."
  value       = local.nats_url
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
