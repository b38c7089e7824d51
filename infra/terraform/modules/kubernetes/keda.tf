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

# What KEDA's nats-jetstream scaler is told, per lane. On a cluster it reads /jsz at the
# endpoint (any server behind the headless Service), finds the consumer's leader by
# name, and asks that server again as <server name>.<endpoint host>: with the chart's
# no_advertise, /varz has no connect_urls, so the names come from the route URLs
# (<pod>.<headless service>), and the server name is the pod's. The consumers exist
# before the ScaledObject does (setup.tf), so the lookup finds a leader from the start.
locals {
  # Pending plus unacknowledged tasks per replica: a replica runs this many at once.
  keda_lag_threshold = tostring(module.shared.tasks_per_replica)

  keda_normal_lane = {
    natsServerMonitoringEndpoint = local.nats_monitoring_endpoint
    account                      = local.nats_account
    stream                       = local.nats_stream
    consumer                     = local.worker_consumer
    lagThreshold                 = local.keda_lag_threshold
    # Any waiting task brings the first worker up from zero.
    activationLagThreshold = "0"
  }

  keda_bulk_lane = {
    natsServerMonitoringEndpoint = local.nats_monitoring_endpoint
    account                      = local.nats_account
    stream                       = local.nats_stream
    consumer                     = local.worker_bulk_consumer
    lagThreshold                 = local.keda_lag_threshold
    activationLagThreshold       = "0"
  }
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
      triggers = [
        { type = "nats-jetstream", name = "normal-lane", metadata = local.keda_normal_lane },
        { type = "nats-jetstream", name = "bulk-lane", metadata = local.keda_bulk_lane },
      ]
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

  depends_on = [helm_release.keda, kubernetes_job_v1.setup]
}
