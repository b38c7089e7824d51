# The three HTTP functions as Cloud Run services from the functions image, reachable
# only through the load balancer in lb.tf.
resource "google_service_account" "functions" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-functions"
  display_name = "qmill HTTP functions"

  depends_on = [google_project_service.apis]
}

resource "google_cloud_run_v2_service" "function" {
  for_each = toset(local.function_names)

  project             = var.project_id
  name                = "${var.name_prefix}-${each.key}"
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
  deletion_protection = var.deletion_protection
  labels              = local.labels
  # The load balancer is the API's door; callers carry no Google identity (API keys
  # come with the [auth] settings of a later issue).
  invoker_iam_disabled = true

  template {
    service_account                  = google_service_account.functions.email
    max_instance_request_concurrency = var.function_concurrency
    # Long polls (GET /tasks/{id}?wait=) last up to [server] max_wait_seconds.
    timeout = "90s"

    scaling {
      min_instance_count = var.function_min_replicas
      max_instance_count = var.function_max_replicas
    }

    vpc_access {
      network_interfaces {
        network    = local.vpc_network
        subnetwork = local.vpc_subnetwork
      }
      egress = "ALL_TRAFFIC"
    }

    containers {
      name    = each.key
      image   = module.shared.functions_image
      command = ["functions-framework"]
      args = [
        "--asgi",
        "--target", each.key,
        "--source", "/app/functions/${each.key}/main.py",
        "--host", "0.0.0.0",
        "--port", tostring(local.function_port),
      ]

      ports {
        name           = "http1"
        container_port = local.function_port
      }

      env {
        name  = "WORKERS"
        value = tostring(module.shared.function_workers)
      }

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

      env {
        name = "QMILL_AUTH__API_KEY_HASHES"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.api_key_hashes.secret_id
            version = "latest"
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

      resources {
        # The arbiter and function_workers parse processes, as measured (modules/shared).
        limits            = { cpu = var.function_cpu, memory = "${module.shared.function_memory_mib}Mi" }
        cpu_idle          = true
        startup_cpu_boost = true
      }

      # TCP: a function whose NATS or Redis is down still answers 503 with Retry-After.
      startup_probe {
        tcp_socket {
          port = local.function_port
        }
        period_seconds    = 2
        failure_threshold = 30
      }

      # /livez answers 200 while the process serves HTTP and asks nothing of NATS or
      # Redis (qmill.server.probes), so an outage of either never restarts the functions;
      # a hung event loop does (3 x 10 s). /readyz is for load balancers, not restarts.
      liveness_probe {
        http_get {
          path = local.livez_path
          port = local.function_port
        }
        period_seconds    = 10
        timeout_seconds   = 5
        failure_threshold = 3
      }
    }

    # Managed Service for Prometheus's sidecar scrapes this function's /metrics (metrics.tf).
    # The function container above is the ingress container (the only one with ports);
    # the collector starts once the function passed its startup probe.
    dynamic "containers" {
      for_each = var.metrics_sidecar ? ["functions"] : []
      content {
        name       = local.gmp_sidecar_name
        image      = var.metrics_sidecar_image
        depends_on = [each.key]

        volume_mounts {
          name       = local.gmp_config_volume
          mount_path = local.gmp_config_path
        }

        resources {
          limits = local.gmp_sidecar_limits
        }

        # The collector's own health endpoint (run-service.yaml upstream).
        liveness_probe {
          http_get {
            path = "/liveness"
            port = local.gmp_liveness_port
          }
          period_seconds  = 30
          timeout_seconds = 30
        }
      }
    }

    dynamic "volumes" {
      for_each = var.metrics_sidecar ? ["functions"] : []
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
    precondition {
      condition     = tonumber(var.function_cpu) >= module.shared.function_min_cpu
      error_message = "A function needs ${module.shared.function_memory_mib} MiB (function_workers parse processes); Cloud Run gives that much only with at least ${module.shared.function_min_cpu} CPUs: raise function_cpu or lower function_workers."
    }
  }

  depends_on = [
    google_secret_manager_secret_iam_member.redis_url,
    google_secret_manager_secret_version.redis_url,
    google_secret_manager_secret_iam_member.nats_url,
    google_secret_manager_secret_version.nats_url,
    google_secret_manager_secret_iam_member.api_key_hashes,
    google_secret_manager_secret_version.api_key_hashes,
    google_secret_manager_secret_iam_member.gmp_config,
    google_secret_manager_secret_version.gmp_config,
  ]
}

# [auth] api_key_hashes for the functions.
resource "google_secret_manager_secret" "api_key_hashes" {
  project   = var.project_id
  secret_id = "${var.name_prefix}-api-key-hashes"
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

resource "google_secret_manager_secret_version" "api_key_hashes" {
  secret      = google_secret_manager_secret.api_key_hashes.id
  secret_data = module.shared.api_key_hashes_json
}

resource "google_secret_manager_secret_iam_member" "api_key_hashes" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.api_key_hashes.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.functions.email}"
}
