output "ip_address" {
  description = "The load balancer's address: point the domain's A record here."
  value       = google_compute_global_address.api.address
}

output "url" {
  description = "The API's URL (once the managed certificate is active)."
  value       = "https://${var.domain}"
}

output "nats_url" {
  description = "NATS URL the containers use (private DNS)."
  value       = local.nats_url
}

output "worker_pool" {
  description = "The worker pool's full name (scale it by hand with gcloud when the autoscaler is off)."
  value       = google_cloud_run_v2_worker_pool.worker.id
}

output "worker_memory_mib" {
  description = "Memory of each worker instance, in MiB."
  value       = module.shared.worker_memory_mib
}

output "images" {
  description = "The images the services and the worker pool run."
  value       = { functions = module.shared.functions_image, worker = module.shared.worker_image }
}
