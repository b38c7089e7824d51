output "nats" {
  description = "Values of the nats chart."
  value       = local.nats
}

output "valkey" {
  description = "Values of the valkey chart."
  value       = local.valkey
}

output "redis_maxmemory_mib" {
  description = "Valkey's maxmemory, in MiB (below the container's limit)."
  value       = local.redis_maxmemory_mib
}
