# NATS client authentication: one user whose password Terraform generates. The servers
# get its bcrypt hash (nats-cloud-init); the containers get QMILL_NATS__URL, with the
# password, from Secret Manager. Both are in the Terraform state: keep the state in a
# bucket only operators can read (examples/cloudrun: the GCS backend).
#
# Not done: TLS. Client and route traffic stays on the VPC (no public addresses, the
# firewall admits the subnet only); TLS needs a CA and certificates for the VMs and
# [nats] settings for a CA file, which qmill does not have yet.
locals {
  nats_user = "qmill"
}

resource "random_password" "nats" {
  length  = 32
  special = false
}

resource "google_secret_manager_secret" "nats_url" {
  project   = var.project_id
  secret_id = "${var.name_prefix}-nats-url"
  labels    = local.labels

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

# Every server by name, each with the credentials: nats.py authenticates to a server with
# the user and password of that server's own URL, so a server learned only by gossip
# (client_advertise) would get none.
resource "google_secret_manager_secret_version" "nats_url" {
  secret = google_secret_manager_secret.nats_url.id
  secret_data = join(",", [
    for index in range(var.nats_nodes) :
    "nats://${local.nats_user}:${random_password.nats.result}@nats-${index}.${local.nats_host}:${local.nats_client_port}"
  ])
}

resource "google_secret_manager_secret_iam_member" "nats_url" {
  for_each = {
    functions = google_service_account.functions.email
    worker    = google_service_account.worker.email
  }

  project   = var.project_id
  secret_id = google_secret_manager_secret.nats_url.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${each.value}"
}
