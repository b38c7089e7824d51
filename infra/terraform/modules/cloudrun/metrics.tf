# Prometheus metrics on Cloud Run: Google Cloud Managed Service for Prometheus's Cloud Run
# sidecar (run-gmp-sidecar, an OpenTelemetry Collector build) runs next to every function
# instance and every worker instance, scrapes the qmill container's /metrics over the
# instance's shared localhost, and writes to Cloud Monitoring (PromQL in Metrics Explorer
# and Managed Grafana). There is no Prometheus server to run.
#
# Upstream, read for this file (GoogleCloudPlatform/run-gmp-sidecar at tag 1.7.0):
#   * https://cloud.google.com/run/docs/monitoring-managed-prometheus-sidecar
#   * run-service.yaml: the collector as a second container with
#     container-dependencies {"collector": ["app"]}, a liveness probe GET /liveness on
#     13133, and the RunMonitoring config from a Secret Manager secret mounted as
#     /etc/rungmp/config.yaml (entrypoint.go reads that path and re-reads it every 20 s).
#   * confgenerator/config.go: RunMonitoring is apiVersion monitoring.googleapis.com/v1beta,
#     spec.endpoints[] of {port (a string), path, interval}, spec.targetLabels.metadata a
#     subset of instance, revision, service, configuration; the default config scrapes
#     8080 /metrics every 30s, which would miss the worker's port.
#   * README: the instance's service account needs roles/monitoring.metricWriter.
# The sidecar reads K_SERVICE, K_REVISION and K_CONFIGURATION for the namespace and the
# service/revision labels; Cloud Run sets them on services. Worker pools do not (they set
# CLOUD_RUN_WORKER_POOL*), so the worker's series carry an empty namespace: select them by
# job="<prefix>-worker" (metadata.name below).
locals {
  # qmill.server.routes.LIVEZ_PATH, the functions' liveness probe (functions.tf).
  livez_path = "/livez"
  # qmill.server.routes: every function and the worker serve Prometheus text here.
  metrics_path = "/metrics"

  gmp_config_path      = "/etc/rungmp"
  gmp_config_file      = "config.yaml"
  gmp_liveness_port    = 13133
  gmp_scrape_interval  = "30s" # the sidecar's default; Cloud Monitoring bills per sample
  gmp_sidecar_name     = "gmp-collector"
  gmp_config_volume    = "gmp-config"
  gmp_target_metadata  = ["instance", "revision", "service", "configuration"]
  gmp_sidecar_limits   = { cpu = "1", memory = "512Mi" }
  gmp_service_accounts = { functions = google_service_account.functions.email, worker = google_service_account.worker.email }

  # One RunMonitoring per kind of instance: the functions on their HTTP port, the worker
  # on [worker] metrics_port (QMILL_WORKER__METRICS_PORT in module.shared.worker_env).
  # metadata.name becomes the series' job label.
  gmp_configs = {
    functions = {
      apiVersion = "monitoring.googleapis.com/v1beta"
      kind       = "RunMonitoring"
      metadata   = { name = "${var.name_prefix}-functions" }
      spec = {
        endpoints    = [{ port = tostring(local.function_port), path = local.metrics_path, interval = local.gmp_scrape_interval }]
        targetLabels = { metadata = local.gmp_target_metadata }
      }
    }
    worker = {
      apiVersion = "monitoring.googleapis.com/v1beta"
      kind       = "RunMonitoring"
      metadata   = { name = "${var.name_prefix}-worker" }
      spec = {
        endpoints    = [{ port = tostring(local.worker_metrics_port), path = local.metrics_path, interval = local.gmp_scrape_interval }]
        targetLabels = { metadata = local.gmp_target_metadata }
      }
    }
  }
  # (A for expression: a conditional between this object and {} has inconsistent types.)
  gmp_targets = { for target, config in local.gmp_configs : target => config if var.metrics_sidecar }
}

resource "google_secret_manager_secret" "gmp_config" {
  for_each = local.gmp_targets

  project   = var.project_id
  secret_id = "${var.name_prefix}-gmp-${each.key}"
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "gmp_config" {
  for_each = local.gmp_targets

  secret      = google_secret_manager_secret.gmp_config[each.key].id
  secret_data = yamlencode(each.value)
}

resource "google_secret_manager_secret_iam_member" "gmp_config" {
  for_each = local.gmp_targets

  project   = var.project_id
  secret_id = google_secret_manager_secret.gmp_config[each.key].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${local.gmp_service_accounts[each.key]}"
}

# The sidecar writes the scraped series (and its own) to Cloud Monitoring.
resource "google_project_iam_member" "metric_writer" {
  for_each = local.gmp_targets

  project = var.project_id
  role    = "roles/monitoring.metricWriter"
  member  = "serviceAccount:${local.gmp_service_accounts[each.key]}"
}
