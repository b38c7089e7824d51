# The three HTTP functions: one Deployment, Service and HorizontalPodAutoscaler each,
# all from the functions image, behind the Ingress in ingress.tf.
resource "kubernetes_deployment_v1" "function" {
  for_each = toset(local.function_names)

  metadata {
    name      = "${var.name_prefix}-${each.key}"
    namespace = local.namespace
    labels    = merge(local.labels, { "app.kubernetes.io/name" = each.key, "app.kubernetes.io/component" = "function" })
  }

  spec {
    replicas = max(1, var.function_min_replicas)

    selector {
      match_labels = { "app.kubernetes.io/part-of" = "qmill", "app.kubernetes.io/name" = each.key }
    }

    template {
      metadata {
        labels      = merge(local.labels, { "app.kubernetes.io/name" = each.key, "app.kubernetes.io/component" = "function" })
        annotations = local.scrape_annotations.function
      }

      spec {
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
          name              = each.key
          image             = module.shared.functions_image
          image_pull_policy = "Always"
          command           = ["functions-framework"]
          args = [
            "--asgi",
            "--target", each.key,
            "--source", "/app/functions/${each.key}/main.py",
            "--host", "0.0.0.0",
            "--port", tostring(local.function_port),
          ]

          port {
            name           = "http"
            container_port = local.function_port
          }

          env {
            name  = "WORKERS"
            value = tostring(module.shared.function_workers)
          }

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

          env {
            name = "QMILL_AUTH__API_KEY_HASHES"
            value_from {
              secret_key_ref {
                name = kubernetes_secret_v1.qmill.metadata[0].name
                key  = local.api_keys_secret_key
              }
            }
          }

          dynamic "env" {
            for_each = module.shared.function_env
            content {
              name  = env.key
              value = env.value
            }
          }

          # The measured need of WORKERS server processes (module.shared.function_memory_mib).
          resources {
            requests = { cpu = var.function_cpu, memory = "${module.shared.function_memory_mib}Mi" }
            limits   = { cpu = var.function_cpu, memory = "${module.shared.function_memory_mib}Mi" }
          }

          # /livez, not /readyz, for readiness too: a function whose NATS or Redis is down
          # still answers (503 with Retry-After and a JSON body), and must stay in the
          # Service to do so rather than leave the Ingress with no endpoint.
          startup_probe {
            http_get {
              path = "/livez"
              port = "http"
            }
            period_seconds    = 2
            failure_threshold = 60
          }

          readiness_probe {
            http_get {
              path = "/livez"
              port = "http"
            }
            period_seconds = 5
          }

          liveness_probe {
            http_get {
              path = "/livez"
              port = "http"
            }
            period_seconds    = 15
            timeout_seconds   = 5
            failure_threshold = 3
          }

          security_context {
            allow_privilege_escalation = false
            read_only_root_filesystem  = true
            run_as_non_root            = true
            capabilities {
              drop = ["ALL"]
            }
          }

          # Writable /tmp under the read-only root: where WORKERS processes share their
          # metrics (/tmp/qmill-metrics-<pid>, 64 KiB files; qmill.server.metrics).
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

  # The HorizontalPodAutoscaler owns the replica count.
  lifecycle {
    ignore_changes = [spec[0].replicas]
  }

  # The functions also ensure the stream and consumers when they start; after the Job
  # they find them as configured.
  depends_on = [kubernetes_job_v1.setup]
}

resource "kubernetes_service_v1" "function" {
  for_each = toset(local.function_names)

  metadata {
    name      = "${var.name_prefix}-${each.key}"
    namespace = local.namespace
    labels    = local.labels
  }

  spec {
    type     = "ClusterIP"
    selector = { "app.kubernetes.io/part-of" = "qmill", "app.kubernetes.io/name" = each.key }

    port {
      name        = "http"
      port        = local.function_port
      target_port = "http"
    }
  }
}

resource "kubernetes_horizontal_pod_autoscaler_v2" "function" {
  for_each = toset(local.function_names)

  metadata {
    name      = "${var.name_prefix}-${each.key}"
    namespace = local.namespace
    labels    = local.labels
  }

  spec {
    # A HorizontalPodAutoscaler cannot go below 1 (scale to zero: the Cloud Run target).
    min_replicas = max(1, var.function_min_replicas)
    max_replicas = var.function_max_replicas

    scale_target_ref {
      api_version = "apps/v1"
      kind        = "Deployment"
      name        = kubernetes_deployment_v1.function[each.key].metadata[0].name
    }

    metric {
      type = "Resource"
      resource {
        name = "cpu"
        target {
          type                = "Utilization"
          average_utilization = var.function_target_cpu_percent
        }
      }
    }
  }
}

resource "kubernetes_pod_disruption_budget_v1" "function" {
  for_each = toset(local.function_names)

  metadata {
    name      = "${var.name_prefix}-${each.key}"
    namespace = local.namespace
    labels    = local.labels
  }

  spec {
    max_unavailable = "1"
    selector {
      match_labels = { "app.kubernetes.io/part-of" = "qmill", "app.kubernetes.io/name" = each.key }
    }
  }
}
