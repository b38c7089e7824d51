module "shared" {
  source = "../shared"

  name_prefix                 = var.name_prefix
  image_registry              = var.image_registry
  image_tag                   = var.image_tag
  functions_image_name        = var.functions_image_name
  worker_image_name           = var.worker_image_name
  max_qubits                  = var.max_qubits
  max_shots                   = var.max_shots
  max_execution_seconds       = var.max_execution_seconds
  worker_max_concurrent_tasks = var.worker_max_concurrent_tasks
  worker_executor             = var.worker_executor
  worker_grace_period_seconds = var.worker_grace_period_seconds
  worker_max_attempts         = var.worker_max_attempts
  worker_cpu                  = var.worker_cpu
  worker_memory_headroom_mib  = var.worker_memory_headroom_mib
  worker_min_replicas         = var.worker_min_replicas
  worker_max_replicas         = var.worker_max_replicas
  worker_tasks_per_replica    = var.worker_tasks_per_replica
  function_min_replicas       = var.function_min_replicas
  function_max_replicas       = var.function_max_replicas
  function_workers            = var.function_workers
  nats_stream_replicas        = var.nats_stream_replicas
  result_ttl_seconds          = var.result_ttl_seconds
  log_level                   = var.log_level
  auth_enabled                = var.auth_enabled
  api_key_hashes              = var.api_key_hashes
  allowed_hosts               = var.allowed_hosts
  extra_env                   = var.extra_env

  # The task stream has at most one replica per NATS server.
  nats_cluster_size = var.nats_nodes

  # Cloud Run sends SIGKILL 10 s after SIGTERM, an instance has at most 32 GiB, and
  # more memory needs more CPUs.
  platform_stop_seconds     = local.cloud_run_stop_seconds
  platform_max_memory_mib   = local.cloud_run_max_memory_mib
  platform_min_cpu_over_mib = local.cloud_run_min_cpu_over_mib
}

locals {
  cloud_run_stop_seconds   = 10
  cloud_run_max_memory_mib = 32768
  # Cloud Run's CPU-per-memory rule: an instance with more than 4 GiB needs 2 CPUs, more
  # than 8 GiB 4, more than 16 GiB 6, more than 24 GiB 8; and 4 CPUs need at least
  # 2 GiB, 6 or 8 CPUs 4 GiB. An instance that breaks it fails only at apply, so the
  # shared module's worker_cpu output and the preconditions here check it at plan.
  cloud_run_min_cpu_over_mib = { "4096" = 2, "8192" = 4, "16384" = 6, "24576" = 8 }
  worker_min_memory_mib      = module.shared.worker_cpu >= 6 ? 4096 : module.shared.worker_cpu >= 4 ? 2048 : 512

  labels = merge(var.labels, { "part-of" = "qmill", "managed-by" = "terraform" })

  # Private DNS: nats.<zone> has every server's address; nats-<i>.nats.<zone> one each
  # (KEDA's scaler asks a consumer's leader at <server name>.<monitoring host>).
  dns_domain = "${var.name_prefix}.internal."
  nats_host  = "nats.${trimsuffix(local.dns_domain, ".")}"
  # Without credentials: the containers get the full URL from Secret Manager (nats_auth.tf).
  nats_url = "nats://${local.nats_host}:${local.nats_client_port}"

  nats_monitoring_endpoint = "${local.nats_host}:${local.nats_monitor_port}"

  # Instances reach the VPC (NATS, Memorystore) with Direct VPC egress.
  vpc_network    = google_compute_network.qmill.id
  vpc_subnetwork = google_compute_subnetwork.qmill.id
}

resource "google_project_service" "apis" {
  for_each = toset([
    "compute.googleapis.com",
    "dns.googleapis.com",
    "iam.googleapis.com",
    # Managed Service for Prometheus: the metrics sidecar writes to Cloud Monitoring.
    "monitoring.googleapis.com",
    "parametermanager.googleapis.com",
    "redis.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
  ])

  project            = var.project_id
  service            = each.key
  disable_on_destroy = false
}
