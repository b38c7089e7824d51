# Before any worker runs: `qmill-setup` (from the worker image, with the worker's
# settings) creates or updates the task stream and both lanes' durable consumers, and
# exits non-zero unless they exist as configured. Terraform waits for the Job, and the
# worker Deployment, its ScaledObject and the functions come after it: KEDA's
# nats-jetstream scaler finds no consumer leader on a clustered NATS for a consumer
# that does not exist, so with worker_min_replicas = 0 the first task would never bring
# up a worker. A change of image or settings replaces the Job, which runs it again.
resource "kubernetes_job_v1" "setup" {
  metadata {
    name      = "${var.name_prefix}-setup"
    namespace = local.namespace
    labels    = merge(local.labels, { "app.kubernetes.io/name" = "setup", "app.kubernetes.io/component" = "setup" })
  }

  spec {
    # NATS may still be electing its meta leader right after the chart is ready.
    backoff_limit           = 6
    active_deadline_seconds = 600

    template {
      metadata {
        labels = merge(local.labels, { "app.kubernetes.io/name" = "setup", "app.kubernetes.io/component" = "setup" })
      }

      spec {
        restart_policy                  = "Never"
        automount_service_account_token = false
        enable_service_links            = false

        security_context {
          run_as_non_root = local.pod_security_context.run_as_non_root
          run_as_user     = local.pod_security_context.run_as_user
          run_as_group    = local.pod_security_context.run_as_group
          fs_group        = local.pod_security_context.fs_group
          seccomp_profile {
            type = "RuntimeDefault"
          }
        }

        dynamic "image_pull_secrets" {
          for_each = var.image_pull_secrets
          content {
            name = image_pull_secrets.value
          }
        }

        container {
          name              = "setup"
          image             = module.shared.worker_image
          image_pull_policy = "Always"
          command           = ["qmill-setup"]

          env {
            name = "QMILL_NATS__URL"
            value_from {
              secret_key_ref {
                name = kubernetes_secret_v1.qmill.metadata[0].name
                key  = local.nats_url_secret_key
              }
            }
          }

          env {
            name = "QMILL_REDIS__URL"
            value_from {
              secret_key_ref {
                name = kubernetes_secret_v1.qmill.metadata[0].name
                key  = local.redis_url_secret_key
              }
            }
          }

          # The workers' settings: the consumers are created as the workers will bind them.
          dynamic "env" {
            for_each = module.shared.worker_env
            content {
              name  = env.key
              value = env.value
            }
          }

          resources {
            requests = { cpu = "100m", memory = "256Mi" }
            limits   = { cpu = "500m", memory = "512Mi" }
          }

          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            run_as_non_root            = true
            capabilities {
              drop = ["ALL"]
            }
          }

          volume_mount {
            name       = "tmp"
            mount_path = "/tmp"
          }
        }

        volume {
          name = "tmp"
          empty_dir {
            size_limit = "64Mi"
          }
        }
      }
    }
  }

  wait_for_completion = true

  timeouts {
    create = "10m"
    update = "10m"
  }

  depends_on = [helm_release.nats, helm_release.valkey]
}
