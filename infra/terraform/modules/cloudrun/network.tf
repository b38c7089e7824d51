# One VPC for the NATS servers, Memorystore and the Cloud Run instances (Direct VPC egress).
resource "google_compute_network" "qmill" {
  project                 = var.project_id
  name                    = "${var.name_prefix}-vpc"
  auto_create_subnetworks = false

  depends_on = [google_project_service.apis]
}

resource "google_compute_subnetwork" "qmill" {
  project       = var.project_id
  name          = "${var.name_prefix}-subnet"
  region        = var.region
  network       = google_compute_network.qmill.id
  ip_cidr_range = var.subnet_cidr
  # Instances with all traffic routed into the VPC still reach Google APIs.
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_5_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# The NATS servers pull their image from Docker Hub: outbound NAT, no public addresses.
resource "google_compute_router" "qmill" {
  project = var.project_id
  name    = "${var.name_prefix}-router"
  region  = var.region
  network = google_compute_network.qmill.id
}

resource "google_compute_router_nat" "qmill" {
  project                            = var.project_id
  name                               = "${var.name_prefix}-nat"
  router                             = google_compute_router.qmill.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

# Clients (functions, workers, the autoscaler) reach NATS' client and monitoring ports.
resource "google_compute_firewall" "nats_clients" {
  project       = var.project_id
  name          = "${var.name_prefix}-nats-clients"
  network       = google_compute_network.qmill.id
  direction     = "INGRESS"
  source_ranges = [var.subnet_cidr]
  target_tags   = ["${var.name_prefix}-nats"]

  allow {
    protocol = "tcp"
    ports    = [tostring(local.nats_client_port), tostring(local.nats_monitor_port)]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# The servers route to each other.
resource "google_compute_firewall" "nats_cluster" {
  project     = var.project_id
  name        = "${var.name_prefix}-nats-cluster"
  network     = google_compute_network.qmill.id
  direction   = "INGRESS"
  source_tags = ["${var.name_prefix}-nats"]
  target_tags = ["${var.name_prefix}-nats"]

  allow {
    protocol = "tcp"
    ports    = [tostring(local.nats_cluster_port)]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_dns_managed_zone" "internal" {
  project    = var.project_id
  name       = "${var.name_prefix}-internal"
  dns_name   = local.dns_domain
  visibility = "private"
  labels     = local.labels

  private_visibility_config {
    networks {
      network_url = google_compute_network.qmill.id
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_dns_record_set" "nats" {
  project      = var.project_id
  managed_zone = google_dns_managed_zone.internal.name
  name         = "nats.${local.dns_domain}"
  type         = "A"
  ttl          = 60
  rrdatas      = [for address in google_compute_address.nats : address.address]
}

resource "google_dns_record_set" "nats_node" {
  count = var.nats_nodes

  project      = var.project_id
  managed_zone = google_dns_managed_zone.internal.name
  name         = "nats-${count.index}.nats.${local.dns_domain}"
  type         = "A"
  ttl          = 60
  rrdatas      = [google_compute_address.nats[count.index].address]
}
