# KEDA scales the worker Deployment on the durable consumers' pending counts. It is
# usually installed once per cluster; set install_keda to install it here.
resource "helm_release" "keda" {
  count = var.install_keda ? 1 : 0

  name             = "keda"
  namespace        = var.keda_namespace
  create_namespace = true
  repository       = "https://kedacore.github.io/charts"
  chart            = "keda"
  version          = var.keda_chart_version
  wait             = true
}

resource "kubernetes_manifest" "worker_scaledobject" {
  manifest = {
    apiVersion = "keda.sh/v1alpha1"
    kind       = "ScaledObject"
    metadata = {
      name      = "${var.name_prefix}-worker"
      namespace = local.namespace
      labels    = local.labels
    }
    spec = {
      scaleTargetRef = {
        apiVersion = "apps/v1"
        kind       = "Deployment"
        name       = kubernetes_deployment_v1.worker.metadata[0].name
      }
      minReplicaCount = var.worker_min_replicas
      maxReplicaCount = var.worker_max_replicas
      pollingInterval = var.keda_polling_interval_seconds
      cooldownPeriod  = var.keda_cooldown_seconds
      # One trigger per lane; KEDA scales on the larger lag, so a backlog waiting only in
      # the bulk lane still keeps (and brings up) workers.
      triggers = [{
        type = "nats-jetstream"
        name = "normal-lane"
        metadata = {
          natsServerMonitoringEndpoint = local.nats_monitoring_endpoint
          account                      = local.nats_account
          stream                       = local.nats_stream
          consumer                     = local.worker_consumer
          # Pending plus unacknowledged tasks per replica: a replica runs this many at once.
          lagThreshold           = tostring(module.shared.tasks_per_replica)
          activationLagThreshold = "0"
        }
        }, {
        type = "nats-jetstream"
        name = "bulk-lane"
        metadata = {
          natsServerMonitoringEndpoint = local.nats_monitoring_endpoint
          account                      = local.nats_account
          stream                       = local.nats_stream
          consumer                     = local.worker_bulk_consumer
          lagThreshold                 = tostring(module.shared.tasks_per_replica)
          activationLagThreshold       = "0"
        }
      }]
      advanced = {
        horizontalPodAutoscalerConfig = {
          behavior = {
            scaleDown = {
              stabilizationWindowSeconds = 120
              policies                   = [{ type = "Pods", value = 1, periodSeconds = 60 }]
            }
          }
        }
      }
    }
  }

  depends_on = [helm_release.keda, helm_release.nats]
}
