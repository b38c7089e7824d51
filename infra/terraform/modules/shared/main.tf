# What the targets derive from the shared variables: image references, the environment
# of each container, the worker's memory and CPU, and the autoscaler's target.
locals {
  image_prefix    = var.image_registry == "" ? "" : "${var.image_registry}/"
  functions_image = "${local.image_prefix}${var.functions_image_name}:${var.image_tag}"
  worker_image    = "${local.image_prefix}${var.worker_image_name}:${var.image_tag}"

  # app.kubernetes.io/version: a label value is at most 63 characters of [A-Za-z0-9._-],
  # alphanumeric at both ends. image_tag may carry a digest ("0.1.0@sha256:...", refused
  # by the API server as a label) and be up to 128 characters: keep the tag, cut it to
  # 63, trim what is not alphanumeric off both ends (its characters are already allowed).
  version_label = replace(
    substr(split("@", var.image_tag)[0], 0, 63),
    "/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/",
    "",
  )

  # [worker] memory_budget_mb: room for every slot to hold a statevector of max_qubits,
  # so the widest accepted circuit never waits for memory (Settings.statevector_qubit_limit
  # stays max_qubits).
  worker_concurrency = var.worker_max_concurrent_tasks
  statevector_bytes  = 16 * pow(2, var.max_qubits)
  memory_budget_mb   = max(16, ceil(local.worker_concurrency * local.statevector_bytes / 1048576))
  # Settings.worker_memory_bytes: the budget plus the worker's and each simulating
  # process's own footprint.
  worker_memory_bytes = local.memory_budget_mb * 1048576 + (local.worker_concurrency + 1) * local.process_overhead_bytes
  # The container limit: the need rounded up to whole MiB, plus headroom.
  worker_memory_mib = ceil(local.worker_memory_bytes / 1048576) + var.worker_memory_headroom_mib
  worker_cpu        = coalesce(var.worker_cpu, local.worker_concurrency)
  # Aer's OpenMP threads per simulation: the container's cores shared among the slots
  # (0 would divide os.cpu_count(), which counts the node's cores, not the container's).
  aer_threads = max(1, floor(local.worker_cpu / local.worker_concurrency))

  tasks_per_replica = coalesce(var.worker_tasks_per_replica, local.worker_concurrency)

  # The function container: functions-framework's arbiter (~60 MiB) and, per server
  # process, ~335 MiB measured once it has parsed a 400 KB program (infra/compose.yaml's
  # submit), plus room for a 1 MiB program (max_body_bytes) per process; rounded up to
  # 256 MiB. For 2 processes: 60 + 2 x (335 + 400) = 1530 -> 1536 MiB, compose's limit.
  function_memory_mib = 256 * ceil((local.function_base_mib + var.function_workers * (local.function_process_mib + local.function_program_room_mib)) / 256)

  # One path per (path, function), in route order: what an Ingress or URL map routes.
  # "/" is exact (the web page), not a prefix of everything. A path with an {id} segment
  # ("/tasks/{id}/histogram.svg") needs no entry: the prefix route above it (Ingress
  # Prefix "/tasks/", URL map "/tasks/*") already sends it to the same function.
  http_paths = distinct([
    for route in local.routes : {
      path     = route.path
      match    = route.path != "/" && endswith(route.path, "/") ? "prefix" : "exact"
      function = route.function
    } if !strcontains(route.path, "{id}")
  ])

  # Settings every process must agree on: the stream and consumer configuration is
  # written by whichever process connects, so functions and workers get the same values.
  # QMILL_NATS__URL and QMILL_REDIS__URL are added by each target (the Redis URL from a secret).
  common_env = merge(
    {
      QMILL_LIMITS__MAX_QUBITS            = tostring(var.max_qubits)
      QMILL_LIMITS__MAX_SHOTS             = tostring(var.max_shots)
      QMILL_LIMITS__MAX_EXECUTION_SECONDS = tostring(var.max_execution_seconds)
      QMILL_NATS__STREAM_REPLICAS         = tostring(local.nats_stream_replicas)
      QMILL_REDIS__RESULT_TTL_SECONDS     = tostring(var.result_ttl_seconds)
      QMILL_WORKER__EXECUTOR              = var.worker_executor
      QMILL_WORKER__MAX_ATTEMPTS          = tostring(var.worker_max_attempts)
      QMILL_LOG__LEVEL                    = var.log_level
      QMILL_LOG__FORMAT                   = "json"
      QMILL_AUTH__ENABLED                 = tostring(var.auth_enabled)
      QMILL_SERVER__ALLOWED_HOSTS         = jsonencode(var.allowed_hosts)
    },
    var.extra_env,
  )

  # Submit admits a statevector circuit only if it fits [worker] memory_budget_mb
  # (Settings.statevector_qubit_limit): it must see the workers' budget, or it computes
  # its limit from the code's default and refuses circuits the workers were sized for.
  function_env = merge(local.common_env, {
    QMILL_WORKER__MEMORY_BUDGET_MB = tostring(local.memory_budget_mb)
  })

  worker_env = merge(local.common_env, {
    QMILL_WORKER__MAX_CONCURRENT_TASKS = tostring(local.worker_concurrency)
    QMILL_WORKER__MEMORY_BUDGET_MB     = tostring(local.memory_budget_mb)
    QMILL_WORKER__AER_THREADS          = tostring(local.aer_threads)
    QMILL_WORKER__GRACE_PERIOD_SECONDS = tostring(local.worker_grace_period_seconds)
    QMILL_WORKER__HEARTBEAT_FILE       = local.worker_heartbeat_file
    QMILL_WORKER__METRICS_PORT         = tostring(local.worker_metrics_port)
  })
}
