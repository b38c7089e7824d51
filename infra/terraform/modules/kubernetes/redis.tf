# Valkey (the Redis fork, same protocol) from its official chart: the append-only file on
# a persistent volume, maxmemory with noeviction, a Recreate strategy, and a password
# from var.redis_password. The values are chart_values/'s (module.chart_values.valkey).
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

resource "helm_release" "valkey" {
  name       = local.redis_name
  namespace  = local.namespace
  repository = "https://valkey.io/valkey-helm/"
  chart      = "valkey"
  version    = var.valkey_chart_version
  wait       = true
  timeout    = 600
  values     = [yamlencode(module.chart_values.valkey)]
}
