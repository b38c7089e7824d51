# NATS JetStream on Compute Engine: one server per zone, each with a persistent disk for
# the file store and a fixed internal address, clustered over routes. Google offers no
# managed NATS, and Cloud Run has no persistent disks, so these are the pieces we run.
data "google_compute_zones" "available" {
  project = var.project_id
  region  = var.region
  status  = "UP"
}

data "google_compute_image" "cos" {
  project = "cos-cloud"
  family  = "cos-stable"
}

locals {
  nats_zones = [for index in range(var.nats_nodes) : data.google_compute_zones.available.names[index % length(data.google_compute_zones.available.names)]]
}

resource "google_service_account" "nats" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-nats"
  display_name = "qmill NATS servers"
}

resource "google_project_iam_member" "nats" {
  for_each = toset(["roles/logging.logWriter", "roles/monitoring.metricWriter"])

  project = var.project_id
  role    = each.key
  member  = "serviceAccount:${google_service_account.nats.email}"
}

resource "google_compute_address" "nats" {
  count = var.nats_nodes

  project      = var.project_id
  name         = "${var.name_prefix}-nats-${count.index}"
  region       = var.region
  subnetwork   = google_compute_subnetwork.qmill.id
  address_type = "INTERNAL"
}

resource "google_compute_disk" "nats" {
  count = var.nats_nodes

  project = var.project_id
  name    = "${var.name_prefix}-nats-${count.index}-data"
  zone    = local.nats_zones[count.index]
  type    = var.nats_disk_type
  size    = var.nats_disk_size_gb
  labels  = local.labels
}

resource "google_compute_instance" "nats" {
  count = var.nats_nodes

  project      = var.project_id
  name         = "${var.name_prefix}-nats-${count.index}"
  zone         = local.nats_zones[count.index]
  machine_type = var.nats_machine_type
  tags         = ["${var.name_prefix}-nats"]
  labels       = local.labels

  boot_disk {
    initialize_params {
      image = data.google_compute_image.cos.self_link
      size  = 20
    }
  }

  attached_disk {
    source      = google_compute_disk.nats[count.index].id
    device_name = "nats-data"
  }

  network_interface {
    subnetwork = google_compute_subnetwork.qmill.id
    network_ip = google_compute_address.nats[count.index].address
  }

  service_account {
    email  = google_service_account.nats.email
    scopes = ["cloud-platform"]
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  metadata = {
    block-project-ssh-keys = "true"
    enable-oslogin         = "TRUE"
    user-data = templatefile("${path.module}/templates/nats-cloud-init.yaml.tftpl", {
      image = var.nats_image
      nats_conf = templatefile("${path.module}/templates/nats.conf.tftpl", {
        server_name       = "nats-${count.index}"
        host              = "0.0.0.0"
        client_port       = local.nats_client_port
        monitor_port      = local.nats_monitor_port
        client_advertise  = "${google_compute_address.nats[count.index].address}:${local.nats_client_port}"
        store_dir         = "/data/jetstream"
        sync_interval     = local.nats_sync_interval
        cluster_name      = "${var.name_prefix}-nats"
        cluster_port      = local.nats_cluster_port
        cluster_advertise = "${google_compute_address.nats[count.index].address}:${local.nats_cluster_port}"
        routes            = var.nats_nodes > 1 ? [for address in google_compute_address.nats : "nats-route://${address.address}:${local.nats_cluster_port}"] : []
      })
    })
  }

  allow_stopping_for_update = true

  depends_on = [google_compute_router_nat.qmill]
}
