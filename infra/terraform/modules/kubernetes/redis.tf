# Valkey (the Redis fork, same protocol) from its official chart, with the append-only
# file on a persistent volume and a password from var.redis_password.
resource "kubernetes_secret_v1" "valkey_users" {
  metadata {
    name      = "${local.redis_name}-users"
    namespace = local.namespace
    labels    = local.labels
  }

  # The chart reads the password of ACL user "default" from the key "default".
  data = {
    default = var.redis_password
  }
}

locals {
  valkey_values = {
    fullnameOverride = local.redis_name
    image            = { tag = var.valkey_image_tag }
    service          = { port = local.redis_port }
    dataStorage = merge(
      { enabled = true, requestedSize = var.redis_storage_size, keepPvc = true },
      var.storage_class == null ? {} : { className = var.storage_class },
    )
    auth = {
      enabled             = true
      usersExistingSecret = kubernetes_secret_v1.valkey_users.metadata[0].name
      aclUsers = {
        default = { permissions = "~* &* +@all" }
      }
    }
    # Append-only persistence: every write is fsynced before it is answered.
    valkeyConfig = "appendonly yes\nappendfsync ${local.redis_appendfsync}\nsave 900 1\n"
    resources = {
      requests = { cpu = "250m", memory = var.redis_memory }
      limits   = { memory = var.redis_memory }
    }
  }
}

resource "helm_release" "valkey" {
  name       = local.redis_name
  namespace  = local.namespace
  repository = "https://valkey.io/valkey-helm/"
  chart      = "valkey"
  version    = var.valkey_chart_version
  wait       = true
  timeout    = 600
  values     = [yamlencode(local.valkey_values)]
}
