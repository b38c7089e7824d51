# NATS from the official chart: a JetStream cluster with file storage on persistent
# volumes, client auth, and the monitoring port KEDA's nats-jetstream scaler reads. The
# values are chart_values/'s (module.chart_values.nats).
resource "helm_release" "nats" {
  name       = local.nats_name
  namespace  = local.namespace
  repository = "https://nats-io.github.io/k8s/helm/charts/"
  chart      = "nats"
  version    = var.nats_chart_version
  wait       = true
  timeout    = 600
  values     = [yamlencode(module.chart_values.nats)]
}
