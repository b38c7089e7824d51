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
  # Kubernetes imposes no stop timeout (no platform_stop_seconds): the shared module's
  # default grace is max_execution_seconds, so a scale-in lets a running simulation
  # finish, and the pod's termination grace is 15 s longer (shared/platform.tf).
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
  # The stream's replicas are clamped to the servers there are (module.shared.nats_stream_replicas).
  nats_cluster_size  = var.nats_replicas
  result_ttl_seconds = var.result_ttl_seconds
  log_level          = var.log_level
  auth_enabled       = var.auth_enabled
  api_key_hashes     = var.api_key_hashes
  allowed_hosts      = var.allowed_hosts
  extra_env          = var.extra_env
}

locals {
  namespace = var.create_namespace ? kubernetes_namespace_v1.qmill[0].metadata[0].name : var.namespace

  nats_name  = "${var.name_prefix}-nats"
  redis_name = "${var.name_prefix}-valkey"
  # The chart's client Service and its headless Service (one DNS name per server).
  nats_host          = "${local.nats_name}.${local.namespace}.svc.cluster.local"
  nats_headless_host = "${local.nats_name}-headless.${local.namespace}.svc.cluster.local"
  redis_host         = "${local.redis_name}.${local.namespace}.svc.cluster.local"

  # Every qmill process logs in as this user; the URL with the password is in the Secret
  # <prefix>-settings, never a plain env value.
  nats_user = "qmill"
  nats_url  = "nats://${local.nats_user}:${random_password.nats.result}@${local.nats_host}:${local.nats_client_port}"
  # KEDA queries /jsz here; on a cluster it then asks the consumer's leader directly,
  # as <server>.<this host>, which the headless Service resolves.
  nats_monitoring_endpoint = "${local.nats_headless_host}:${local.nats_monitor_port}"

  labels = {
    "app.kubernetes.io/part-of"    = "qmill"
    "app.kubernetes.io/managed-by" = "terraform"
    # A label value, not the tag: a digest (0.1.0@sha256:...) is not a valid label.
    "app.kubernetes.io/version" = module.shared.version_label
  }

  # Pod annotations Prometheus' usual kubernetes_sd relabelling reads.
  scrape_annotations = {
    worker = {
      "prometheus.io/scrape" = "true"
      "prometheus.io/port"   = tostring(local.worker_metrics_port)
      "prometheus.io/path"   = "/metrics"
    }
    function = {
      "prometheus.io/scrape" = "true"
      "prometheus.io/port"   = tostring(local.function_port)
      "prometheus.io/path"   = "/metrics"
    }
  }

  # Where the Redis URL (with the password) lives; containers read it with secretKeyRef.
  redis_url_secret_key = "QMILL_REDIS__URL"
  nats_url_secret_key  = "QMILL_NATS__URL"
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

# The NATS and Redis URLs, passwords included, for every qmill container; the API key
# hashes for the functions.
resource "kubernetes_secret_v1" "qmill" {
  metadata {
    name      = "${var.name_prefix}-settings"
    namespace = local.namespace
    labels    = local.labels
  }

  data = {
    (local.nats_url_secret_key)  = local.nats_url
    (local.redis_url_secret_key) = "redis://default:${urlencode(var.redis_password)}@${local.redis_host}:${local.redis_port}/0"
    (local.api_keys_secret_key)  = module.shared.api_key_hashes_json
  }
}

# The password of the NATS user "qmill": generated once, kept in the state (see the
# README on state), handed to nats-server through a Secret.
resource "random_password" "nats" {
  length = 32
  # Letters and digits only: nats-server substitutes $NATS_PASSWORD into its config as a
  # token, and the URL carries it unescaped.
  special = false
}

resource "kubernetes_secret_v1" "nats_auth" {
  metadata {
    name      = "${local.nats_name}-auth"
    namespace = local.namespace
    labels    = local.labels
  }

  data = {
    password = random_password.nats.result
  }
}

# The charts' values (chart_values/ uses no provider: tests/infra/test_charts.py plans it
# offline and renders the vendored charts in infra/charts with what it outputs).
module "chart_values" {
  source = "./chart_values"

  nats_name            = local.nats_name
  nats_replicas        = var.nats_replicas
  nats_image_tag       = var.nats_image_tag
  nats_storage_size    = var.nats_storage_size
  nats_memory_mib      = var.nats_memory_mib
  nats_user            = local.nats_user
  nats_password_secret = kubernetes_secret_v1.nats_auth.metadata[0].name
  nats_password_key    = "password"
  spread_across_zones  = var.spread_across_zones
  storage_class        = var.storage_class
  redis_name           = local.redis_name
  valkey_image_tag     = var.valkey_image_tag
  redis_storage_size   = var.redis_storage_size
  redis_memory_mib     = var.redis_memory_mib
  valkey_users_secret  = kubernetes_secret_v1.valkey_users.metadata[0].name
}
