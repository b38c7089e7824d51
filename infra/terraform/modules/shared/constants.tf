# Names and numbers that the code fixes (src/qmill/server/constants.py, src/qmill/server/config.py).
# They are literals on purpose: tests/infra/test_terraform.py reads them from the code
# and fails when the two drift. The kubernetes and cloudrun modules link this file in
# (shared_constants.tf), so every target names the same stream, consumer and routes.
locals {
  # JetStream: the work-queue stream and the workers' durable pull consumers, one per
  # lane (a tenant's tasks past its first few unfinished ones wait in the bulk lane).
  nats_stream          = "QMILL_TASKS"
  worker_consumer      = "qmill-workers"
  worker_bulk_consumer = "qmill-workers-bulk"
  nats_sync_interval   = "always"
  # Redis (Valkey on Kubernetes): the append-only file is fsynced before a write is answered.
  redis_appendfsync = "always"
  # KEDA's nats-jetstream scaler reads this account ("$G" when no accounts are set up).
  nats_account = "$G"

  # The HTTP functions and the routes the gateway, the Ingress and the URL map serve.
  function_names = ["submit", "result", "health"]
  routes = [
    { method = "POST", path = "/tasks", function = "submit" },
    { method = "GET", path = "/tasks/", function = "result" },
    { method = "DELETE", path = "/tasks/", function = "result" },
    { method = "POST", path = "/batches", function = "submit" },
    { method = "GET", path = "/batches/", function = "result" },
    { method = "DELETE", path = "/batches/", function = "result" },
    { method = "GET", path = "/health", function = "health" },
    { method = "GET", path = "/openapi.json", function = "health" },
    { method = "GET", path = "/backend", function = "health" },
    { method = "GET", path = "/tasks/{id}/histogram.svg", function = "result" },
    { method = "GET", path = "/tasks/{id}/diagram.txt", function = "result" },
    { method = "GET", path = "/tasks", function = "submit" },
    { method = "GET", path = "/events", function = "result" },
    { method = "GET", path = "/", function = "result" },
  ]

  # Ports agreed with infra/compose.yaml.
  function_port     = 8080
  nats_client_port  = 4222
  nats_cluster_port = 6222
  nats_monitor_port = 8222
  redis_port        = 6379
  # [worker] metrics_port of a deployed worker: /metrics, /livez and /readyz.
  worker_metrics_port = 9100

  # What one simulating process costs besides its statevector (config.PROCESS_OVERHEAD_BYTES).
  process_overhead_bytes = 335544320

  # What a function container holds (infra/compose.yaml, measured): functions-framework's
  # arbiter, one server process that has parsed a 400 KB program, and the room a 1 MiB
  # program ([limits] max_body_bytes) adds to a process.
  function_base_mib         = 60
  function_process_mib      = 335
  function_program_room_mib = 400

  # The worker's liveness file, checked by `qmill-worker --check`.
  worker_heartbeat_file = "/tmp/qmill-worker.alive"

  # Settings the modules set themselves, so extra_env may not: the URLs (the Redis one
  # holds the password), the API key hashes (from a secret), and everything the worker's
  # memory and grace period follow from.
  reserved_env = [
    "QMILL_NATS__URL",
    "QMILL_REDIS__URL",
    "QMILL_LIMITS__MAX_QUBITS",
    "QMILL_WORKER__MAX_CONCURRENT_TASKS",
    "QMILL_WORKER__GRACE_PERIOD_SECONDS",
    "QMILL_WORKER__HEARTBEAT_FILE",
    "QMILL_WORKER__MEMORY_BUDGET_MB",
    "QMILL_AUTH__ENABLED",
    "QMILL_AUTH__API_KEY_HASHES",
  ]

  # Every environment variable qmill reads (qmill.server.config.env_names()).
  known_env = [
    "QMILL_AUTH__API_KEY_HASHES",
    "QMILL_AUTH__BURST",
    "QMILL_AUTH__ENABLED",
    "QMILL_AUTH__KEYS_FILE",
    "QMILL_AUTH__KEYS_FILE_CHECK_SECONDS",
    "QMILL_AUTH__MAX_IN_FLIGHT",
    "QMILL_AUTH__RATE_PER_SECOND",
    "QMILL_CONFIG",
    "QMILL_LIMITS__MAX_BATCH_TASKS",
    "QMILL_LIMITS__MAX_BODY_BYTES",
    "QMILL_LIMITS__MAX_CLBITS",
    "QMILL_LIMITS__MAX_CLIFFORD_QUBITS",
    "QMILL_LIMITS__MAX_DEPTH",
    "QMILL_LIMITS__MAX_EXECUTION_SECONDS",
    "QMILL_LIMITS__MAX_GATES",
    "QMILL_LIMITS__MAX_QUBITS",
    "QMILL_LIMITS__MAX_SHOTS",
    "QMILL_LIMITS__MAX_STATEMENTS",
    "QMILL_LIMITS__MIN_SHOTS",
    "QMILL_LOG__FORMAT",
    "QMILL_LOG__LEVEL",
    "QMILL_NATS__ACK_WAIT_SECONDS",
    "QMILL_NATS__CONNECT_TIMEOUT_SECONDS",
    "QMILL_NATS__DUPLICATE_WINDOW_SECONDS",
    "QMILL_NATS__PUBLISH_TIMEOUT_SECONDS",
    "QMILL_NATS__STREAM_REPLICAS",
    "QMILL_NATS__URL",
    "QMILL_REDIS__IDEMPOTENCY_WINDOW_SECONDS",
    "QMILL_REDIS__RESULT_TTL_SECONDS",
    "QMILL_REDIS__SOCKET_TIMEOUT_SECONDS",
    "QMILL_REDIS__URL",
    "QMILL_SERVER__ALLOWED_HOSTS",
    "QMILL_SERVER__MAX_WAIT_SECONDS",
    "QMILL_WORKER__AER_THREADS",
    "QMILL_WORKER__EXECUTOR",
    "QMILL_WORKER__GRACE_PERIOD_SECONDS",
    "QMILL_WORKER__HEARTBEAT_FILE",
    "QMILL_WORKER__MAX_ATTEMPTS",
    "QMILL_WORKER__MAX_CONCURRENT_TASKS",
    "QMILL_WORKER__MEMORY_BUDGET_MB",
    "QMILL_WORKER__METRICS_PORT",
  ]
}
