# The API's one public address: a global external Application Load Balancer whose URL
# map sends each API path to the function that owns it (module.shared.http_paths, from
# qmill.server.constants.ROUTES). Anything else goes to the health function, which answers 404.
resource "google_compute_region_network_endpoint_group" "function" {
  for_each = toset(local.function_names)

  project               = var.project_id
  name                  = "${var.name_prefix}-${each.key}"
  region                = var.region
  network_endpoint_type = "SERVERLESS"

  cloud_run {
    service = google_cloud_run_v2_service.function[each.key].name
  }
}

resource "google_compute_backend_service" "function" {
  for_each = toset(local.function_names)

  project               = var.project_id
  name                  = "${var.name_prefix}-${each.key}"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  protocol              = "HTTPS"

  backend {
    group = google_compute_region_network_endpoint_group.function[each.key].id
  }

  log_config {
    enable      = true
    sample_rate = 1.0
  }
}

resource "google_compute_url_map" "api" {
  project         = var.project_id
  name            = "${var.name_prefix}-api"
  default_service = google_compute_backend_service.function["health"].id

  host_rule {
    hosts        = [var.domain]
    path_matcher = "api"
  }

  path_matcher {
    name            = "api"
    default_service = google_compute_backend_service.function["health"].id

    dynamic "path_rule" {
      for_each = module.shared.http_paths
      content {
        # An exact path as is; a prefix ("/tasks/") as a wildcard ("/tasks/*").
        paths   = [path_rule.value.match == "exact" ? path_rule.value.path : "${path_rule.value.path}*"]
        service = google_compute_backend_service.function[path_rule.value.function].id
      }
    }
  }
}

resource "google_compute_managed_ssl_certificate" "api" {
  project = var.project_id
  name    = "${var.name_prefix}-api"

  managed {
    domains = [var.domain]
  }

  depends_on = [google_project_service.apis]
}

resource "google_compute_ssl_policy" "api" {
  project         = var.project_id
  name            = "${var.name_prefix}-api"
  profile         = "MODERN"
  min_tls_version = "TLS_1_2"

  depends_on = [google_project_service.apis]
}

resource "google_compute_target_https_proxy" "api" {
  project          = var.project_id
  name             = "${var.name_prefix}-api"
  url_map          = google_compute_url_map.api.id
  ssl_certificates = [google_compute_managed_ssl_certificate.api.id]
  ssl_policy       = google_compute_ssl_policy.api.id
}

resource "google_compute_global_address" "api" {
  project = var.project_id
  name    = "${var.name_prefix}-api"

  depends_on = [google_project_service.apis]
}

resource "google_compute_global_forwarding_rule" "https" {
  project               = var.project_id
  name                  = "${var.name_prefix}-https"
  target                = google_compute_target_https_proxy.api.id
  ip_address            = google_compute_global_address.api.id
  port_range            = "443"
  load_balancing_scheme = "EXTERNAL_MANAGED"
}

# Plain HTTP only redirects to HTTPS.
resource "google_compute_url_map" "redirect" {
  project = var.project_id
  name    = "${var.name_prefix}-redirect"

  default_url_redirect {
    https_redirect         = true
    redirect_response_code = "MOVED_PERMANENTLY_DEFAULT"
    strip_query            = false
  }

  depends_on = [google_project_service.apis]
}

resource "google_compute_target_http_proxy" "redirect" {
  project = var.project_id
  name    = "${var.name_prefix}-redirect"
  url_map = google_compute_url_map.redirect.id
}

resource "google_compute_global_forwarding_rule" "http" {
  project               = var.project_id
  name                  = "${var.name_prefix}-http"
  target                = google_compute_target_http_proxy.redirect.id
  ip_address            = google_compute_global_address.api.id
  port_range            = "80"
  load_balancing_scheme = "EXTERNAL_MANAGED"
}
