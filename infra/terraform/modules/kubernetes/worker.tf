# The worker: a Deployment that KEDA scales (keda.tf) on how many tasks wait.
resource "kubernetes_deployment_v1" "worker" {
  metadata {
    name      = "${var.name_prefix}-worker"
    namespace = local.namespace
    labels    = merge(local.labels, { "app.kubernetes.io/name" = "worker", "app.kubernetes.io/component" = "worker" })
  }

  spec {
    replicas = var.worker_min_replicas

    selector {
      match_labels = { "app.kubernetes.io/part-of" = "qmill", "app.kubernetes.io/name" = "worker" }
    }

    strategy {
      type = "RollingUpdate"
      rolling_update {
        max_surge       = "1"
        max_unavailable = "0"
      }
    }

    template {
      metadata {
        labels      = merge(local.labels, { "app.kubernetes.io/name" = "worker", "app.kubernetes.io/component" = "worker" })
        annotations = local.scrape_annotations.worker
      }

      spec {
        automount_service_account_token = false
        enable_service_links            = false
        # SIGTERM, then [worker] grace_period_seconds (max_execution_seconds by default)
        # for running tasks, then release the rest for redelivery (not a failed attempt):
        # the kubelet waits longer than that before SIGKILL.
        termination_grace_period_seconds = module.shared.termination_grace_period_seconds

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
          name              = "worker"
          image             = module.shared.worker_image
          image_pull_policy = "Always"
          command           = ["qmill-worker"]

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

          dynamic "env" {
            for_each = module.shared.worker_env
            content {
              name  = env.key
              value = env.value
            }
          }

          # Memory from Settings.worker_memory_bytes (every slot simulating max_qubits),
          # requested in full so the scheduler never overcommits a node with statevectors.
          resources {
            requests = {
              cpu    = tostring(module.shared.worker_cpu)
              memory = "${module.shared.worker_memory_mib}Mi"
            }
            limits = {
              cpu    = tostring(module.shared.worker_cpu)
              memory = "${module.shared.worker_memory_mib}Mi"
            }
          }

          port {
            name           = "metrics"
            container_port = local.worker_metrics_port
          }

          # On [worker] metrics_port: /livez answers while the process runs, /readyz only
          # while NATS and Redis answer it (503 otherwise: a rollout waits).
          startup_probe {
            http_get {
              path = "/livez"
              port = "metrics"
            }
            period_seconds    = 5
            timeout_seconds   = 5
            failure_threshold = 36
          }

          liveness_probe {
            http_get {
              path = "/livez"
              port = "metrics"
            }
            period_seconds    = 15
            timeout_seconds   = 5
            failure_threshold = 3
          }

          readiness_probe {
            http_get {
              path = "/readyz"
              port = "metrics"
            }
            period_seconds  = 10
            timeout_seconds = 5
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
            size_limit = "256Mi"
          }
        }
      }
    }
  }

  # KEDA owns the replica count.
  lifecycle {
    ignore_changes = [spec[0].replicas]
  }

  # The stream and both consumers exist before the first worker binds them.
  depends_on = [kubernetes_job_v1.setup]
}

# Voluntary evictions (node drains, upgrades) take one worker at a time; the evicted
# worker still finishes or releases its tasks within its termination grace period.
resource "kubernetes_pod_disruption_budget_v1" "worker" {
  metadata {
    name      = "${var.name_prefix}-worker"
    namespace = local.namespace
    labels    = local.labels
  }

  spec {
    max_unavailable = "1"
    selector {
      match_labels = { "app.kubernetes.io/part-of" = "qmill", "app.kubernetes.io/name" = "worker" }
    }
  }
}
