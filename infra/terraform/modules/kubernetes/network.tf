# Who may open a connection to what, inside the namespace. Ingress only: qmill's own
# outbound connections (NATS, Valkey, the image registry) are not restricted here.
# A NetworkPolicy needs a CNI that enforces it (Calico, Cilium, GKE Dataplane V2, ...);
# elsewhere these objects are accepted and have no effect.
locals {
  # The qmill pods that are NATS and Valkey clients: the functions, the workers and the
  # setup Job (their "component" label; every one of them is part-of qmill).
  client_components = ["function", "worker", "setup"]

  # Pods of each chart release: both charts label their pods with the release name.
  nats_pods   = { "app.kubernetes.io/instance" = local.nats_name }
  valkey_pods = { "app.kubernetes.io/instance" = local.redis_name }
}

# Everything in the namespace is closed unless a policy below opens it.
resource "kubernetes_network_policy_v1" "default_deny" {
  metadata {
    name      = "${var.name_prefix}-default-deny"
    namespace = local.namespace
    labels    = local.labels
  }

  spec {
    pod_selector {}
    policy_types = ["Ingress"]
  }
}

# NATS: clients from qmill pods; routes between the servers; the monitoring port for
# KEDA's scaler (from its namespace). The kubelet's probes come from the node, which
# the common CNIs let through.
resource "kubernetes_network_policy_v1" "nats" {
  metadata {
    name      = local.nats_name
    namespace = local.namespace
    labels    = local.labels
  }

  spec {
    pod_selector {
      match_labels = local.nats_pods
    }
    policy_types = ["Ingress"]

    ingress {
      from {
        pod_selector {
          match_labels = { "app.kubernetes.io/part-of" = "qmill" }
          match_expressions {
            key      = "app.kubernetes.io/component"
            operator = "In"
            values   = local.client_components
          }
        }
      }
      ports {
        port     = tostring(local.nats_client_port)
        protocol = "TCP"
      }
    }

    ingress {
      from {
        pod_selector {
          match_labels = local.nats_pods
        }
      }
      ports {
        port     = tostring(local.nats_cluster_port)
        protocol = "TCP"
      }
    }

    ingress {
      from {
        namespace_selector {
          match_labels = { "kubernetes.io/metadata.name" = var.keda_namespace }
        }
      }
      ports {
        port     = tostring(local.nats_monitor_port)
        protocol = "TCP"
      }
    }
  }
}

# Valkey: qmill pods only.
resource "kubernetes_network_policy_v1" "valkey" {
  metadata {
    name      = local.redis_name
    namespace = local.namespace
    labels    = local.labels
  }

  spec {
    pod_selector {
      match_labels = local.valkey_pods
    }
    policy_types = ["Ingress"]

    ingress {
      from {
        pod_selector {
          match_labels = { "app.kubernetes.io/part-of" = "qmill" }
          match_expressions {
            key      = "app.kubernetes.io/component"
            operator = "In"
            values   = local.client_components
          }
        }
      }
      ports {
        port     = tostring(local.redis_port)
        protocol = "TCP"
      }
    }
  }
}

# The functions: the one way in from outside (the Ingress controller, wherever it runs),
# and Prometheus' scrape of /metrics on the same port.
resource "kubernetes_network_policy_v1" "functions" {
  metadata {
    name      = "${var.name_prefix}-functions"
    namespace = local.namespace
    labels    = local.labels
  }

  spec {
    pod_selector {
      match_labels = { "app.kubernetes.io/part-of" = "qmill", "app.kubernetes.io/component" = "function" }
    }
    policy_types = ["Ingress"]

    ingress {
      ports {
        port     = tostring(local.function_port)
        protocol = "TCP"
      }
    }
  }
}

# The workers take no connections but Prometheus' scrape and the kubelet's probes, both
# on the metrics port.
resource "kubernetes_network_policy_v1" "worker_metrics" {
  metadata {
    name      = "${var.name_prefix}-worker-metrics"
    namespace = local.namespace
    labels    = local.labels
  }

  spec {
    pod_selector {
      match_labels = { "app.kubernetes.io/part-of" = "qmill", "app.kubernetes.io/component" = "worker" }
    }
    policy_types = ["Ingress"]

    ingress {
      ports {
        port     = tostring(local.worker_metrics_port)
        protocol = "TCP"
      }
    }
  }
}
