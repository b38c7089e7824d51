terraform {
  required_version = ">= 1.9"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.50"
    }
    # Cloud Run worker pools are a beta API.
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "~> 6.50"
    }
    # The NATS password (nats_auth.tf).
    random = {
      source  = "hashicorp/random"
      version = "~> 3.7"
    }
  }
}
