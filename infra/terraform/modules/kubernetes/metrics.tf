# Metrics: every worker and function pod carries prometheus.io/* scrape annotations
# (main.tf, local.scrape_annotations). With the Prometheus Operator, set service_monitor:
# one ServiceMonitor then selects the function Services (port "http") and this headless
# Service of the workers (port "metrics"), both at /metrics.
resource "kubernetes_service_v1" "worker_metrics" {
  metadata {
    name      = "${var.name_prefix}-worker-metrics"
    namespace = local.namespace
    labels    = local.labels
  }

  spec {
    cluster_ip = "None"
    selector   = { "app.kubernetes.io/part-of" = "qmill", "app.kubernetes.io/name" = "worker" }

    port {
      name        = "metrics"
      port        = local.worker_metrics_port
      target_port = "metrics"
    }
  }
}

resource "kubernetes_manifest" "service_monitor" {
  count = var.service_monitor ? 1 : 0

  manifest = {
    apiVersion = "monitoring.coreos.com/v1"
    kind       = "ServiceMonitor"
    metadata = {
      name      = var.name_prefix
      namespace = local.namespace
      labels    = local.labels
    }
    spec = {
      selector = {
        matchLabels = {
          "app.kubernetes.io/part-of"    = "qmill"
          "app.kubernetes.io/managed-by" = "terraform"
        }
      }
      # A Service that has no port of an endpoint's name is not scraped on it.
      endpoints = [
        { port = "http", path = "/metrics", interval = "30s" },
        { port = "metrics", path = "/metrics", interval = "30s" },
      ]
    }
  }
}
