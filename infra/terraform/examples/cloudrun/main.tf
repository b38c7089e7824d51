# qmill on Google Cloud: functions on Cloud Run, workers in a Cloud Run worker pool,
# Memorystore for Redis, NATS on Compute Engine. Copy this file, then:
#   gcloud storage buckets create gs://STATE_BUCKET --location=EU \
#     --uniform-bucket-level-access --public-access-prevention
#   gcloud storage buckets update gs://STATE_BUCKET --versioning
#   terraform init -backend-config=bucket=STATE_BUCKET
#   terraform apply -var project_id=... -var domain=... (see the README)
terraform {
  required_version = ">= 1.9"

  # The state holds secrets in clear: the Memorystore AUTH string, the NATS password
  # (both also in Secret Manager) and the API key hashes. Keep it in a bucket of its own
  # that only the operators can read (uniform access, no public access, versioning so a
  # bad apply can be undone; a CMEK if your policy asks for one), never on a laptop.
  backend "gcs" {
    prefix = "qmill"
  }

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.50"
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 6.50"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.7"
    }
  }
}

variable "project_id" {
  description = "Google Cloud project."
  type        = string
}

variable "region" {
  description = "Region of everything regional."
  type        = string
  default     = "europe-west1"
}

variable "domain" {
  description = "Domain of the API (its A record must point at the ip_address output)."
  type        = string
}

variable "api_key_hashes" {
  description = "SHA-256 hex digests of the API keys (`qmill key new`)."
  type        = list(string)
  sensitive   = true
}

variable "image_registry" {
  description = "Artifact Registry path the images are pushed to, for example europe-west1-docker.pkg.dev/PROJECT/qmill."
  type        = string
}

provider "google" {
  project = var.project_id
  region  = var.region
}

provider "google-beta" {
  project = var.project_id
  region  = var.region
}

module "qmill" {
  source = "../../modules/cloudrun"

  project_id     = var.project_id
  region         = var.region
  domain         = var.domain
  image_registry = var.image_registry
  api_key_hashes = var.api_key_hashes

  worker_max_concurrent_tasks = 2
  max_qubits                  = 26
  worker_min_replicas         = 0
  worker_max_replicas         = 10
}

output "ip_address" {
  value = module.qmill.ip_address
}

output "url" {
  value = module.qmill.url
}
