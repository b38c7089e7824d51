# NATS from the official chart: a JetStream cluster with file storage on persistent
# volumes and the monitoring port KEDA's nats-jetstream scaler reads.
locals {
  nats_values = {
    fullnameOverride = local.nats_name
    config = {
      cluster = {
        enabled  = var.nats_replicas > 1
        replicas = var.nats_replicas
      }
      jetstream = {
        enabled = true
        fileStore = {
          enabled = true
          pvc = merge(
            { enabled = true, size = var.nats_storage_size },
            var.storage_class == null ? {} : { storageClassName = var.storage_class },
          )
        }
        memoryStore = { enabled = false }
        # fsync every write before the publish is acknowledged (constants.NATS_SYNC_INTERVAL).
        merge = { sync_interval = local.nats_sync_interval }
      }
      monitor = {
        enabled = true
        port    = local.nats_monitor_port
      }
      nats = {
        port = local.nats_client_port
      }
    }
    container = {
      image = { tag = var.nats_image_tag }
      merge = {
        resources = {
          requests = { cpu = "250m", memory = "512Mi" }
          limits   = { memory = "2Gi" }
        }
      }
    }
    podTemplate = {
      topologySpreadConstraints = {
        "kubernetes.io/hostname" = {
          maxSkew           = 1
          whenUnsatisfiable = "ScheduleAnyway"
        }
      }
    }
    podDisruptionBudget = { enabled = true }
    natsBox             = { enabled = false }
  }
}

resource "helm_release" "nats" {
  name       = local.nats_name
  namespace  = local.namespace
  repository = "https://nats-io.github.io/k8s/helm/charts/"
  chart      = "nats"
  version    = var.nats_chart_version
  wait       = true
  timeout    = 600
  values     = [yamlencode(local.nats_values)]
}
