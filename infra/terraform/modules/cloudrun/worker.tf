# The worker as a Cloud Run worker pool (no HTTP port; pulls from JetStream). Its
# instance count is set by the autoscaler in autoscaler.tf.
resource "google_service_account" "worker" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-worker"
  display_name = "qmill workers"

  depends_on = [google_project_service.apis]
}

resource "google_cloud_run_v2_worker_pool" "worker" {
  provider = google-beta

  project             = var.project_id
  name                = "${var.name_prefix}-worker"
  location            = var.region
  launch_stage        = "BETA"
  deletion_protection = var.deletion_protection
  labels              = local.labels

  scaling {
    scaling_mode = "MANUAL"
    # The starting count; afterwards CREMA (or you, with gcloud) sets it.
    manual_instance_count = var.autoscaler_enabled ? var.worker_min_replicas : max(var.worker_min_replicas, 1)
  }

  template {
    service_account = google_service_account.worker.email

    vpc_access {
      network_interfaces {
        network    = local.vpc_network
        subnetwork = local.vpc_subnetwork
      }
      egress = "ALL_TRAFFIC"
    }

    containers {
      name    = "worker"
      image   = module.shared.worker_image
      command = ["qmill-worker"]

      # Every NATS server, with the credentials (nats_auth.tf).
      env {
        name = "QMILL_NATS__URL"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.nats_url.secret_id
            version = "latest"
          }
        }
      }

      env {
        name = "QMILL_REDIS__URL"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.redis_url.secret_id
            version = "latest"
          }
        }
      }

      # Includes QMILL_WORKER__GRACE_PERIOD_SECONDS capped at 8 s, 2 s before Cloud Run's
      # SIGKILL (10 s after SIGTERM, fixed): tasks still running then are released,
      # handed back to JetStream without counting as a failed attempt, and another
      # worker runs them from the start.
      dynamic "env" {
        for_each = module.shared.worker_env
        content {
          name  = env.key
          value = env.value
        }
      }

      # Memory from Settings.worker_memory_bytes: every slot simulating max_qubits.
      resources {
        limits = {
          cpu    = tostring(module.shared.worker_cpu)
          memory = "${module.shared.worker_memory_mib}Mi"
        }
      }

      # No probes: the pinned google-beta (6.50) has no liveness_probe or startup_probe
      # (nor ports) on a worker pool's containers, so the worker's /livez on
      # QMILL_WORKER__METRICS_PORT cannot be wired up here (README.md).
    }

    # Managed Service for Prometheus's sidecar scrapes the worker's /metrics on
    # [worker] metrics_port (metrics.tf); a worker pool takes several containers.
    dynamic "containers" {
      for_each = var.metrics_sidecar ? ["worker"] : []
      content {
        name       = local.gmp_sidecar_name
        image      = var.metrics_sidecar_image
        depends_on = ["worker"]

        volume_mounts {
          name       = local.gmp_config_volume
          mount_path = local.gmp_config_path
        }

        resources {
          limits = local.gmp_sidecar_limits
        }
      }
    }

    dynamic "volumes" {
      for_each = var.metrics_sidecar ? ["worker"] : []
      content {
        name = local.gmp_config_volume
        secret {
          secret = google_secret_manager_secret.gmp_config[volumes.value].secret_id
          items {
            version = "latest"
            path    = local.gmp_config_file
          }
        }
      }
    }
  }

  lifecycle {
    # The autoscaler owns the instance count.
    ignore_changes = [scaling[0].manual_instance_count]

    precondition {
      condition     = contains([1, 2, 4, 6, 8], module.shared.worker_cpu)
      error_message = "Cloud Run instances have 1, 2, 4, 6 or 8 CPUs: set worker_cpu (or worker_max_concurrent_tasks) to one of them."
    }

    precondition {
      condition     = module.shared.worker_memory_mib >= local.worker_min_memory_mib
      error_message = "Cloud Run needs at least ${local.worker_min_memory_mib} MiB with ${module.shared.worker_cpu} CPUs; the worker has ${module.shared.worker_memory_mib} MiB: raise worker_memory_headroom_mib or lower worker_cpu."
    }
  }

  # The stream and both consumers exist (the setup job ran) before a worker starts, so
  # the autoscaler sees them even with no worker ever started.
  depends_on = [
    google_cloud_run_v2_job.setup,
    google_secret_manager_secret_iam_member.redis_url,
    google_secret_manager_secret_version.redis_url,
    google_secret_manager_secret_iam_member.nats_url,
    google_secret_manager_secret_version.nats_url,
    google_secret_manager_secret_iam_member.gmp_config,
    google_secret_manager_secret_version.gmp_config,
  ]
}
