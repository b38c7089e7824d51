# CREMA, Google's KEDA-based autoscaler for Cloud Run, scales the worker pool with the
# same nats-jetstream trigger as the Kubernetes target's ScaledObject: pending plus
# unacknowledged tasks of the workers' durable consumers (both lanes), read from NATS'
# monitoring port.
locals {
  crema_config = {
    apiVersion = "crema/v1"
    kind       = "CremaConfig"
    spec = {
      pollingInterval = var.autoscaler_polling_seconds
      scaledObjects = [{
        spec = {
          scaleTargetRef = {
            name = "projects/${var.project_id}/locations/${var.region}/workerpools/${google_cloud_run_v2_worker_pool.worker.name}"
          }
          minReplicaCount = var.worker_min_replicas
          maxReplicaCount = var.worker_max_replicas
          # One trigger per lane (see the Kubernetes ScaledObject).
          triggers = [{
            type = "nats-jetstream"
            name = "task-queue"
            metadata = {
              natsServerMonitoringEndpoint = local.nats_monitoring_endpoint
              account                      = local.nats_account
              stream                       = local.nats_stream
              consumer                     = local.worker_consumer
              lagThreshold                 = tostring(module.shared.tasks_per_replica)
              activationLagThreshold       = "0"
            }
            }, {
            type = "nats-jetstream"
            name = "task-queue-bulk"
            metadata = {
              natsServerMonitoringEndpoint = local.nats_monitoring_endpoint
              account                      = local.nats_account
              stream                       = local.nats_stream
              consumer                     = local.worker_bulk_consumer
              lagThreshold                 = tostring(module.shared.tasks_per_replica)
              activationLagThreshold       = "0"
            }
          }]
        }
      }]
    }
  }
}

resource "google_service_account" "autoscaler" {
  count = var.autoscaler_enabled ? 1 : 0

  project      = var.project_id
  account_id   = "${var.name_prefix}-autoscaler"
  display_name = "qmill worker autoscaler (CREMA)"

  depends_on = [google_project_service.apis]
}

resource "google_parameter_manager_parameter" "autoscaler" {
  count = var.autoscaler_enabled ? 1 : 0

  project      = var.project_id
  parameter_id = "${var.name_prefix}-autoscaler"
  format       = "YAML"
  labels       = local.labels

  depends_on = [google_project_service.apis]
}

resource "google_parameter_manager_parameter_version" "autoscaler" {
  count = var.autoscaler_enabled ? 1 : 0

  parameter = google_parameter_manager_parameter.autoscaler[0].id
  # A new version whenever the configuration changes; the service below follows it.
  parameter_version_id = "v-${substr(sha256(yamlencode(local.crema_config)), 0, 16)}"
  parameter_data       = yamlencode(local.crema_config)
}

resource "google_project_iam_member" "autoscaler_config" {
  count = var.autoscaler_enabled ? 1 : 0

  project = var.project_id
  role    = "roles/parametermanager.parameterViewer"
  member  = "serviceAccount:${google_service_account.autoscaler[0].email}"
}

resource "google_cloud_run_v2_worker_pool_iam_member" "autoscaler" {
  count    = var.autoscaler_enabled ? 1 : 0
  provider = google-beta

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_worker_pool.worker.name
  role     = "roles/run.developer"
  member   = "serviceAccount:${google_service_account.autoscaler[0].email}"
}

resource "google_service_account_iam_member" "autoscaler_acts_as_worker" {
  count = var.autoscaler_enabled ? 1 : 0

  service_account_id = google_service_account.worker.name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.autoscaler[0].email}"
}

resource "google_cloud_run_v2_service" "autoscaler" {
  count = var.autoscaler_enabled ? 1 : 0

  project             = var.project_id
  name                = "${var.name_prefix}-autoscaler"
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_INTERNAL_ONLY"
  deletion_protection = var.deletion_protection
  labels              = local.labels

  template {
    service_account = google_service_account.autoscaler[0].email

    # One always-on instance that polls on its own (pollingInterval in the config).
    scaling {
      min_instance_count = 1
      max_instance_count = 1
    }

    # NATS' monitoring port is only on the VPC.
    vpc_access {
      network_interfaces {
        network    = local.vpc_network
        subnetwork = local.vpc_subnetwork
      }
      egress = "ALL_TRAFFIC"
    }

    containers {
      image          = var.autoscaler_image
      base_image_uri = var.autoscaler_base_image

      env {
        name  = "CREMA_CONFIG"
        value = google_parameter_manager_parameter_version.autoscaler[0].name
      }

      env {
        name  = "OUTPUT_SCALER_METRICS"
        value = "False"
      }

      resources {
        limits   = { cpu = "1", memory = "1Gi" }
        cpu_idle = false
      }
    }
  }

  # The consumers exist before the autoscaler first reads them (setup.tf).
  depends_on = [
    google_cloud_run_v2_job.setup,
    google_project_iam_member.autoscaler_config,
    google_cloud_run_v2_worker_pool_iam_member.autoscaler,
    google_service_account_iam_member.autoscaler_acts_as_worker,
  ]
}
