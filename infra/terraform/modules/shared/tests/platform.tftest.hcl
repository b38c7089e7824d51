# `terraform test` in plan mode (offline): what the targets take from the shared module
# for the platform they run on.

variables {
  api_key_hashes    = ["fa2bdca424f01f01ffb48df93acc35d439c7fd331a1a7fba6ac2fd83aa9ab31a"]
  nats_cluster_size = 3
}

# A stream cannot have more replicas than the cluster has servers: with one NATS server,
# R3 makes JetStream refuse the stream, and every submit fails (issue 16, Kubernetes).
run "stream_replicas_are_clamped_to_one_server" {
  command = plan

  variables {
    nats_cluster_size = 1
  }

  assert {
    condition     = output.nats_stream_replicas == 1 && output.function_env["QMILL_NATS__STREAM_REPLICAS"] == "1" && output.worker_env["QMILL_NATS__STREAM_REPLICAS"] == "1"
    error_message = "One server holds one replica: QMILL_NATS__STREAM_REPLICAS must be 1."
  }
}

run "stream_replicas_on_a_three_node_cluster" {
  command = plan

  assert {
    condition     = output.nats_stream_replicas == 3 && output.function_env["QMILL_NATS__STREAM_REPLICAS"] == "3"
    error_message = "Three servers hold the default three replicas."
  }
}

run "stream_replicas_below_the_cluster_size_stay" {
  command = plan

  variables {
    nats_cluster_size    = 5
    nats_stream_replicas = 3
  }

  assert {
    condition     = output.nats_stream_replicas == 3
    error_message = "The clamp only lowers."
  }
}

run "the_cluster_size_is_required_to_be_a_count" {
  command = plan

  variables {
    nats_cluster_size = 0
  }

  expect_failures = [var.nats_cluster_size]
}

# A digest tag (allowed by image_tag's validation) is not a label value: the API server
# rejects app.kubernetes.io/version = "0.1.0@sha256:..." (issue 16).
run "version_label_of_a_digest_tag" {
  command = plan

  variables {
    image_tag = "0.1.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
  }

  assert {
    condition     = output.version_label == "0.1.0"
    error_message = "The label keeps the tag and drops the digest, got ${output.version_label}."
  }

  assert {
    condition     = endswith(output.worker_image, ":0.1.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
    error_message = "The image reference keeps the digest."
  }
}

run "version_label_of_a_long_tag_with_odd_ends" {
  command = plan

  variables {
    # 70 characters: a tag may have 128, a label 63; the cut leaves a "." at the end.
    image_tag = "_release-2026.12.03-abcdefghijklmnopqrstuvwxyz0123456789abcde.-_more.x"
  }

  assert {
    condition     = length(output.version_label) <= 63 && can(regex("^([A-Za-z0-9][A-Za-z0-9._-]*)?[A-Za-z0-9]$", output.version_label))
    error_message = "Not a valid label value: ${output.version_label}."
  }

  assert {
    condition     = output.version_label == "release-2026.12.03-abcdefghijklmnopqrstuvwxyz0123456789abcde"
    error_message = "Cut to 63, then '_' trimmed at the start and '.-' at the end: ${output.version_label}."
  }
}

run "version_label_of_a_plain_tag" {
  command = plan

  assert {
    condition     = output.version_label == "0.1.0"
    error_message = "A plain tag is its own label."
  }
}

# Kubernetes: the pod's termination grace outlasts the worker's own grace period.
run "termination_grace_outlasts_the_workers_grace" {
  command = plan

  variables {
    worker_grace_period_seconds = 45.5
  }

  assert {
    condition     = tonumber(output.worker_env["QMILL_WORKER__GRACE_PERIOD_SECONDS"]) == 45.5 && output.termination_grace_period_seconds > 45.5
    error_message = "The pod must get longer than the worker's grace period to release its tasks."
  }
}

# Cloud Run: SIGKILL 10 s after SIGTERM, fixed. The worker's grace is capped below it, so
# it releases (hands back) unfinished tasks before it is killed.
run "cloud_run_stop_timeout_caps_the_workers_grace" {
  command = plan

  variables {
    platform_stop_seconds       = 10
    worker_grace_period_seconds = 20
  }

  assert {
    condition     = tonumber(output.worker_env["QMILL_WORKER__GRACE_PERIOD_SECONDS"]) == 8 && output.termination_grace_period_seconds == 10
    error_message = "The worker's grace must end 2 s before Cloud Run's SIGKILL."
  }
}

# One function replica is a single point of failure.
run "two_function_replicas_by_default" {
  command = plan

  assert {
    condition     = output.function_replicas.min == 2
    error_message = "function_min_replicas defaults to 2."
  }
}

# Kubernetes (no fixed stop timeout): by default a running simulation may finish, so the
# termination grace covers max_execution_seconds (it was 35 s against 120 s).
run "default_grace_covers_a_running_simulation" {
  command = plan

  assert {
    condition     = tonumber(output.worker_env["QMILL_WORKER__GRACE_PERIOD_SECONDS"]) == 120 && output.termination_grace_period_seconds > 120
    error_message = "The default grace must cover max_execution_seconds (120 s)."
  }
}

# Cloud Run: more memory needs more CPUs. 28 qubits x 2 slots is ~9.2 GiB, which needs
# 4 CPUs; the default worker_cpu (one per slot) is 2: refused at plan, not at apply.
run "cloud_run_cpu_per_memory_refuses_too_few_cpus" {
  command = plan

  variables {
    max_qubits                = 28
    platform_min_cpu_over_mib = { "4096" = 2, "8192" = 4, "16384" = 6, "24576" = 8 }
  }

  expect_failures = [output.worker_cpu]
}

run "cloud_run_cpu_per_memory_accepts_enough_cpus" {
  command = plan

  variables {
    max_qubits                = 28
    worker_cpu                = 4
    platform_min_cpu_over_mib = { "4096" = 2, "8192" = 4, "16384" = 6, "24576" = 8 }
  }

  assert {
    condition     = output.worker_memory_mib > 8192 && output.worker_cpu == 4
    error_message = "Over 8 GiB with 4 CPUs is allowed."
  }
}

run "cloud_run_functions_fit_one_cpu" {
  command = plan

  variables {
    platform_min_cpu_over_mib = { "4096" = 2, "8192" = 4, "16384" = 6, "24576" = 8 }
  }

  assert {
    condition     = output.function_min_cpu <= 1 && output.worker_cpu >= 1
    error_message = "Two parse processes (1536 MiB) fit one CPU."
  }
}
