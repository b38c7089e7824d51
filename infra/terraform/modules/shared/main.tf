# What the targets derive from the shared variables: image references, the environment
# of each container, the worker's memory and CPU, and the autoscaler's target.
locals {
  image_prefix    = var.image_registry == "" ? "" : "${var.image_registry}/"
  functions_image = "${local.image_prefix}${var.functions_image_name}:${var.image_tag}"
  worker_image    = "${local.image_prefix}${var.worker_image_name}:${var.image_tag}"

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
      QMILL_NATS__STREAM_REPLICAS         = tostring(var.nats_stream_replicas)
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

  function_env = local.common_env

  worker_env = merge(local.common_env, {
    QMILL_WORKER__MAX_CONCURRENT_TASKS = tostring(local.worker_concurrency)
    QMILL_WORKER__MEMORY_BUDGET_MB     = tostring(local.memory_budget_mb)
    QMILL_WORKER__AER_THREADS          = tostring(local.aer_threads)
    QMILL_WORKER__GRACE_PERIOD_SECONDS = tostring(local.worker_grace_period_seconds)
    QMILL_WORKER__HEARTBEAT_FILE       = local.worker_heartbeat_file
  })
}
