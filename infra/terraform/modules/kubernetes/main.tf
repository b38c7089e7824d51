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
}

locals {
  namespace = var.create_namespace ? kubernetes_namespace_v1.qmill[0].metadata[0].name : var.namespace

  nats_name  = "${var.name_prefix}-nats"
  redis_name = "${var.name_prefix}-valkey"
  # The chart's client Service and its headless Service (one DNS name per server).
  nats_host          = "${local.nats_name}.${local.namespace}.svc.cluster.local"
  nats_headless_host = "${local.nats_name}-headless.${local.namespace}.svc.cluster.local"
  redis_host         = "${local.redis_name}.${local.namespace}.svc.cluster.local"

  nats_url = "nats://${local.nats_host}:${local.nats_client_port}"
  # KEDA queries /jsz here; on a cluster it then asks the consumer's leader directly,
  # as <server>.<this host>, which the headless Service resolves.
  nats_monitoring_endpoint = "${local.nats_headless_host}:${local.nats_monitor_port}"

  labels = {
    "app.kubernetes.io/part-of"    = "qmill"
    "app.kubernetes.io/managed-by" = "terraform"
    "app.kubernetes.io/version"    = var.image_tag
  }

  # Where the Redis URL (with the password) lives; containers read it with secretKeyRef.
  redis_url_secret_key = "QMILL_REDIS__URL"
  api_keys_secret_key  = "QMILL_AUTH__API_KEY_HASHES"

  pod_security_context = {
    run_as_non_root = true
    run_as_user     = 10001
    run_as_group    = 10001
    fs_group        = 10001
  }
}

resource "kubernetes_namespace_v1" "qmill" {
  count = var.create_namespace ? 1 : 0

  metadata {
    name   = var.namespace
    labels = local.labels
  }
}

# The Redis URL, password included, for every qmill container; the API key hashes for
# the functions.
resource "kubernetes_secret_v1" "qmill" {
  metadata {
    name      = "${var.name_prefix}-settings"
    namespace = local.namespace
    labels    = local.labels
  }

  data = {
    (local.redis_url_secret_key) = "redis://default:${urlencode(var.redis_password)}@${local.redis_host}:${local.redis_port}/0"
    (local.api_keys_secret_key)  = module.shared.api_key_hashes_json
  }
}
