# qmill-setup (in both images): creates or updates the JetStream stream and the workers'
# durable consumers (both lanes) from the same QMILL_* settings, and exits non-zero with a
# message when it cannot. It runs as a Cloud Run job during apply, before the worker pool
# and the autoscaler: KEDA's nats-jetstream scaler cannot scale from zero on a consumer
# that does not exist yet (a clustered NATS answers "leader node not found"), and before
# this job only a running worker created the consumer. The functions also ensure stream
# and consumers when they start.
resource "google_cloud_run_v2_job" "setup" {
  provider = google-beta

  project             = var.project_id
  name                = "${var.name_prefix}-setup"
  location            = var.region
  launch_stage        = "BETA"
  deletion_protection = var.deletion_protection
  labels              = local.labels

  # Apply waits for an execution to succeed; a new one whenever the image or the stream
  # and consumer settings change (name + token stay under 63 characters).
  run_execution_token = substr(sha256(jsonencode({
    image = module.shared.functions_image
    env   = module.shared.function_env
    nodes = var.nats_nodes
  })), 0, 16)

  template {
    task_count = 1

    template {
      service_account = google_service_account.functions.email
      max_retries     = 3
      timeout         = "${var.setup_timeout_seconds}s"

      vpc_access {
        network_interfaces {
          network    = local.vpc_network
          subnetwork = local.vpc_subnetwork
        }
        egress = "ALL_TRAFFIC"
      }

      containers {
        name  = "setup"
        image = module.shared.functions_image
        # On a first apply the NATS VMs are created just before this job and may still be
        # booting (pulling the nats image, forming the cluster): try again every 5 s
        # until the task's timeout; each failed try logs qmill-setup's own message.
        command = ["/bin/sh", "-c", "until qmill-setup; do sleep 5; done"]

        env {
          name = "QMILL_NATS__URL"
          value_source {
            secret_key_ref {
              secret  = google_secret_manager_secret.nats_url.secret_id
              version = "latest"
            }
          }
        }

        # The stream's replicas (clamped to the servers) and every setting the consumers
        # follow, exactly as the functions and workers get them.
        dynamic "env" {
          for_each = module.shared.function_env
          content {
            name  = env.key
            value = env.value
          }
        }

        resources {
          limits = { cpu = "1", memory = "512Mi" }
        }
      }
    }
  }

  depends_on = [
    google_compute_instance.nats,
    google_dns_record_set.nats_node,
    google_secret_manager_secret_iam_member.nats_url,
    google_secret_manager_secret_version.nats_url,
  ]
}
