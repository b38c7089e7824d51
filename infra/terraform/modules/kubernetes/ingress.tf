# One public address for the API: each path goes to the function that owns it
# (module.shared.http_paths, from qmill.server.constants.ROUTES). Functions answer wrong verbs
# themselves (405), as behind the gateway.
resource "kubernetes_ingress_v1" "api" {
  metadata {
    name        = "${var.name_prefix}-api"
    namespace   = local.namespace
    labels      = local.labels
    annotations = var.ingress_annotations
  }

  spec {
    ingress_class_name = var.ingress_class_name

    dynamic "tls" {
      for_each = var.ingress_tls_secret == null ? [] : [var.ingress_tls_secret]
      content {
        hosts       = var.ingress_host == null ? [] : [var.ingress_host]
        secret_name = tls.value
      }
    }

    rule {
      host = var.ingress_host

      http {
        dynamic "path" {
          for_each = module.shared.http_paths
          content {
            path      = path.value.path
            path_type = path.value.match == "exact" ? "Exact" : "Prefix"
            backend {
              service {
                name = kubernetes_service_v1.function[path.value.function].metadata[0].name
                port {
                  number = local.function_port
                }
              }
            }
          }
        }
      }
    }
  }
}
