"""One settings tree for every qmill process.

Sources, lowest precedence first: the defaults below, then ``config.toml`` (path
from ``QMILL_CONFIG``, default ``./config.toml`` if present), then environment
variables ``QMILL_<SECTION>__<KEY>`` (for example ``QMILL_WORKER__MAX_CONCURRENT_TASKS=4``).
This module is the only place that reads the environment, so a deployment can
see every knob by reading it.
"""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from qmill.server.errors import ConfigError

ENV_PREFIX = "QMILL_"
ENV_NESTED_DELIMITER = "__"
CONFIG_PATH_ENV = "QMILL_CONFIG"
PROCESS_OVERHEAD_BYTES = 320 * 1024 * 1024


class _Section(BaseModel):
    # A typo in config.toml or an env var must stop start-up, not be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    """The one public address of the system (the gateway in front of the functions)."""

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    # Upper bound for ``GET /tasks/{id}?wait=``, so a client cannot pin a connection forever.
    max_wait_seconds: float = Field(30.0, ge=0, le=300)
    # Host names a request may be addressed to besides the loopback names (localhost,
    # 127.0.0.1, ::1) and ``host`` above, which are always allowed (a browser sends those
    # only to this machine, and health probes use them). Any other Host (port ignored)
    # gets 421, so a DNS-rebinding page cannot reach the API, and a POST or DELETE whose
    # Origin names another host 403 (see qmill.server.hosts). Empty suits `make run` and
    # compose (published on 127.0.0.1); ".example.com" allows a domain and its
    # subdomains; "*" any host (the Terraform default: auth is on, a load balancer
    # picks the name).
    allowed_hosts: list[str] = Field(default_factory=list)
    # Long-polls (``?wait=``) one tenant may have open at once, counted in Redis so every
    # result-function instance shares the count; with auth off everyone is one tenant.
    # Each open one holds a client connection and an upstream connection in the gateway
    # and a task in the result function; over the cap the answer is 429 with Retry-After.
    # 100 covers a client waiting on every task of a large batch at once while one
    # tenant's 300 polls (the 29 s /health of issue 13) are refused.
    max_long_polls_per_tenant: int = Field(100, ge=1, le=100_000)
    # The request line and headers the gateway reads for one request; over it the answer is
    # 431 and the connection is closed. nginx's default, large_client_header_buffers 4 8k.
    max_header_bytes: int = Field(32 * 1024, ge=1024, le=1024 * 1024)
    # Time the gateway gives a client to send a request's line and headers (from the
    # connection, or a kept-alive request's first byte, on), and to send more of its
    # body (between two reads); then it closes the connection, as nginx's
    # client_header_timeout and client_body_timeout do. nginx waits 60 s; clients of an
    # API send their headers in one write and their body at once, and each stalled
    # request holds a socket, so 10 s.
    client_timeout_seconds: float = Field(10.0, gt=0, le=300)
    # After refusing a request whose body is still arriving (413, 431, 408) the gateway
    # reads and discards what the client still sends for up to this long (at most 5 s
    # between reads) before closing, so a client that writes its whole body before
    # reading gets the answer rather than a reset: nginx's lingering_time.
    lingering_seconds: float = Field(30.0, ge=0, le=300)
    # Tasks one page of ``GET /tasks`` may hold (``?limit=``, default 20). Each is one
    # HMGET of a few short fields, pipelined; 100 summaries are ~30 KB of JSON, and a
    # client wanting more follows ``next_cursor``.
    max_list_limit: int = Field(100, ge=1, le=1000)
    # Event streams (GET /events) one tenant may have open at once, counted in Redis like
    # long-polls. Each holds a client and an upstream connection for up to
    # max_event_stream_seconds; a client needs one per task or batch it watches at once,
    # and 20 leave room for a page and a script while 10^4 from one key stay refused.
    max_event_streams_per_tenant: int = Field(20, ge=1, le=100_000)
    # A comment line (": ping") is sent on an idle event stream this often, so proxies and
    # load balancers that close idle connections (nginx's proxy_read_timeout, 45 s here;
    # 60 s on many balancers) keep it open, and a dead client is found by the write.
    event_heartbeat_seconds: float = Field(15.0, gt=0, le=300)
    # An event stream is closed after this long (the client resumes with Last-Event-ID,
    # missing nothing), so a stream's slot and connections are never held for ever, and a
    # deploy drains within it. 300 s is Cloud Run's default request timeout.
    max_event_stream_seconds: float = Field(300.0, ge=1, le=3600)
    # An event stream whose client takes longer than this to accept one write (it stopped
    # reading and the socket buffers are full) is closed: a client that never reads holds
    # no more than those buffers and the stream's bounded queue.
    event_write_timeout_seconds: float = Field(10.0, gt=0, le=300)


class NatsSettings(_Section):
    # One server, or a cluster's servers comma-separated ("nats://a:4222,nats://b:4222"):
    # every client (functions, workers, qmill-setup) connects to one of them and fails
    # over to the others, so one server down is not an outage. Each a nats:// or tls:// URL.
    url: str = "nats://127.0.0.1:4222"
    connect_timeout_seconds: float = Field(1.0, gt=0)
    # How long a publish waits for JetStream's ack before the submit answers 503.
    publish_timeout_seconds: float = Field(1.5, gt=0)
    # JetStream deduplicates publishes with the same Nats-Msg-Id inside this window.
    duplicate_window_seconds: float = Field(120.0, gt=0)
    # A task nobody acks (or marks in progress) within this is redelivered. Workers with
    # the process executor send in-progress heartbeats, so this bounds how long a task
    # waits after its worker died; with the thread executor it is raised to cover a
    # whole run (see Settings.ack_wait_seconds).
    ack_wait_seconds: float = Field(30.0, ge=1)
    # Replicas of the task stream and its consumers: 1 on a single server, 3 on a cluster
    # (a 201 then means a majority of the servers stored the task). At most the cluster's
    # size: JetStream refuses more when the stream is created or updated, and qmill-setup
    # says so. Changing it updates an existing stream (its consumers follow).
    stream_replicas: int = Field(1, ge=1, le=5)
    # Fair scheduling across tenants (auth on): a tenant's tasks go to the normal lane
    # while it has fewer than this many unfinished, the rest to the bulk lane, which
    # workers take from only when the normal lane is empty. So another tenant's task
    # waits behind at most this many of each busy tenant's tasks, not behind a whole
    # 1000-task batch; 8 keeps a few workers' slots busy per tenant. Auth off: one lane.
    tenant_priority_tasks: int = Field(8, ge=1)
    # Bounds of the task stream (queued and unacked tasks). When either is reached a
    # publish is refused (the stream discards new messages, never queued ones) and the
    # submit answers 503 with Retry-After, recording nothing. A task message is ~200
    # bytes on disk (id, subject, Nats-Msg-Id header): 100k tasks, 100 tenants at their
    # in-flight cap, take ~20 MB, inside max_bytes.
    stream_max_msgs: int = Field(100_000, ge=1)
    stream_max_bytes: int = Field(64 * 1024 * 1024, ge=1024 * 1024)
    # The largest message the stream takes: a task message is ~100 bytes of JSON.
    stream_max_msg_size: int = Field(4096, ge=512)

    @field_validator("url")
    @classmethod
    def _nats_scheme(cls, value: str) -> str:
        servers = split_servers(value)
        if not servers:
            raise ValueError("no server: give one URL or several, comma-separated")
        for server in servers:
            _check_url(server, ("nats", "tls"))
        return ",".join(servers)

    @property
    def servers(self) -> list[str]:
        """``url`` as the list of servers nats-py's ``connect(servers=...)`` takes."""
        return split_servers(self.url)


class RedisSettings(_Section):
    url: str = "redis://127.0.0.1:6379"
    # How long a finished task (and its result) is kept.
    result_ttl_seconds: int = Field(7 * 24 * 3600, ge=60)
    # Bounds every Redis call made by a function, so a dead Redis answers 503 quickly.
    socket_timeout_seconds: float = Field(1.0, gt=0)
    # Same Idempotency-Key (and body) within this window returns the same task.
    idempotency_window_seconds: int = Field(24 * 3600, ge=1)
    # `maxmemory` of the Redis that `make run` and compose start, with the `noeviction`
    # policy: evicting would silently drop task records and results, so a full Redis
    # refuses writes instead (a submit is a 503 that records nothing; a worker whose
    # result is refused fails the task with the reason). Sized for results kept
    # result_ttl_seconds: several tenants at their storage quota, plus headroom.
    max_memory_mb: int = Field(1024, ge=16)
    # Bytes one tenant's task records (program, options, answer) may take in Redis at
    # once (auth on). Charged at submit from the answer's estimate (`[limits]
    # max_result_bytes` bounds one), set to the stored size when the task finishes, and
    # released when its record expires. Over it, a submit is a 429 whose Retry-After says
    # when enough will have expired. A quarter of max_memory_mb, so no one tenant can
    # fill Redis alone; ~100k Bell tasks kept a week, or 16 answers at the maximum size.
    tenant_storage_mb: int = Field(256, ge=1)
    # Redis Sentinels to ask which node is the primary (comma-separated host:port), for
    # a replicated Redis that fails over: every client connects to the primary they
    # name and follows a failover without a restart. Empty: connect to `url` directly
    # (one Redis, as `make run` starts). With Sentinels, `url` gives only the password,
    # username and db.
    sentinels: str = ""
    # The name the Sentinels monitor the primary under (`sentinel monitor <name> ...`).
    sentinel_master: str = "qmill"
    # Replicas that must have a submit's records (and a worker's outcome) before qmill
    # acknowledges it (Redis WAIT): replication is asynchronous, so a primary that dies
    # right after a write may take it with it when a replica is promoted. 0 (the default:
    # `make run` and compose have no replica) waits for none; 1 where a replica exists.
    # Not acknowledged within replica_ack_timeout_seconds, a submit is a 503 that
    # withdraws its task and a worker releases the task for another attempt.
    min_replicas_to_ack: int = Field(0, ge=0, le=16)
    # How long a write waits for min_replicas_to_ack replicas (replication on a LAN takes
    # well under a millisecond); below socket_timeout_seconds, so the WAIT's own reply
    # arrives before the call times out.
    replica_ack_timeout_seconds: float = Field(0.5, gt=0, le=10)

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        return _check_url(value, ("redis", "rediss", "unix"))

    @field_validator("sentinels")
    @classmethod
    def _sentinel_list(cls, value: str) -> str:
        sentinel_addresses(value)
        return value

    @field_validator("sentinel_master")
    @classmethod
    def _master_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", value):
            raise ValueError("must be a Sentinel master name ([A-Za-z0-9._-], 1-64 characters)")
        return value

    @model_validator(mode="after")
    def _ack_within_timeout(self) -> RedisSettings:
        if self.min_replicas_to_ack and self.replica_ack_timeout_seconds >= (
            self.socket_timeout_seconds
        ):
            raise ValueError(
                "replica_ack_timeout_seconds must be below socket_timeout_seconds "
                f"({self.socket_timeout_seconds:g}), or every waited write times out"
            )
        if self.sentinels and urlsplit(self.url).scheme == "unix":
            raise ValueError("with sentinels, url must be redis:// or rediss:// (not unix)")
        return self

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``sentinels`` as (host, port) pairs; empty when Redis is reached directly."""
        return sentinel_addresses(self.sentinels)


def sentinel_addresses(value: str) -> list[tuple[str, int]]:
    """Parse ``host:port,host:port`` (IPv6 as ``[::1]:26379``); a clear error otherwise."""
    found: list[tuple[str, int]] = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            if value.strip():
                raise ValueError(f"empty entry in {value!r}: expected host:port,host:port")
            continue
        host, sep, port = item.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{item!r} is not host:port (a port from 1 to 65535)")
        if not re.fullmatch(r"[A-Za-z0-9._:-]+", host):
            raise ValueError(f"{item!r}: {host!r} is not a host name or IP address")
        found.append((host, int(port)))
    return found


class WorkerSettings(_Section):
    # 0 means "one per CPU core".
    max_concurrent_tasks: int = Field(0, ge=0, le=1024)
    # Where simulations run: "process" (warm, killable child processes; measured 589 Bell
    # tasks/s with 2 slots here, event loop never stalls) or "thread" (a
    # ThreadPoolExecutor: 325/s, and Aer holding the GIL freezes the event loop).
    executor: Literal["thread", "process"] = "process"
    # Worker processes started by the embedded run (`make run`).
    processes: int = Field(1, ge=1, le=64)
    # On SIGTERM: how long running tasks may take to finish before they are handed back
    # (released for another worker at once, not counted as an attempt). Where the
    # platform allows, deployments set it above limits.max_execution_seconds so a run
    # always finishes; Cloud Run's 10 s stop leaves 8 s (the hand-back takes ms).
    grace_period_seconds: float = Field(20.0, ge=0)
    # Attempts per task; a task whose attempts all failed or crashed ends `failed`. A
    # stopping worker's hand-back is not an attempt; the worker counts them in the task
    # record (JetStream's delivery count, which includes hand-backs, is unbounded).
    max_attempts: int = Field(3, ge=1, le=20)
    # Aer's OpenMP threads per simulation; 0 shares the cores among concurrent simulations.
    aer_threads: int = Field(0, ge=0, le=1024)
    # Memory for simulation state across this worker's concurrent simulations. A task
    # waits until its state fits (so a burst of wide circuits never exceeds it), and a
    # circuit whose state could never fit is refused at submit.
    memory_budget_mb: int = Field(2048, ge=16)
    # Small compatible tasks pulled together run as the experiments of one simulation
    # (`qmill_worker.batching`): at most this many in one; 1 = off, each task alone (what
    # the benchmark's "before" runs). 1000 Bell tasks from POST /batches, worker and
    # simulator CPU per task: 7.3 ms alone, 1.9 ms at 32, 1.8 ms at 64; 32 keeps a batch
    # (which settles all at once) to tens of milliseconds.
    batch_max_tasks: int = Field(32, ge=1, le=1024)
    # A batch's estimated work at most: shots times statements summed over its tasks
    # (`batching.work`). 32 Bell tasks of 1024 shots are ~230000, ~45 ms of simulation on
    # two busy cores: a batch of heavier small tasks is cut shorter.
    batch_max_work: int = Field(300_000, ge=1)
    # Liveness file the worker touches every few seconds while its event loop runs;
    # `qmill-worker --check` (compose and Kubernetes health checks) tests its age. "" = off.
    heartbeat_file: str = ""
    # Prometheus metrics on this port (all interfaces); 0 = off. Several workers on one
    # host (`make run` with processes > 1) need distinct ports: worker i uses port + i.
    metrics_port: int = Field(0, ge=0, le=65535)

    @property
    def concurrency(self) -> int:
        return self.max_concurrent_tasks or (os.cpu_count() or 1)


class LimitsSettings(_Section):
    """What one request may ask for; each violation is a 422 naming the limit and value.

    Qubits: a circuit that needs a statevector (16 * 2**n bytes) may have at most
    ``Settings.statevector_qubit_limit`` qubits: ``max_qubits``, lowered further if a
    statevector that wide would not fit ``[worker] memory_budget_mb``. A Clifford-only
    circuit runs on Aer's stabilizer method (memory ~n**2 bits), so it may have up to
    ``max_clifford_qubits``.
    """

    min_shots: int = Field(1, ge=1)
    max_shots: int = Field(100_000, ge=1)
    max_qubits: int = Field(26, ge=1, le=40)
    max_clifford_qubits: int = Field(1000, ge=1, le=100_000)
    max_clbits: int = Field(128, ge=1)
    max_gates: int = Field(20_000, ge=1)
    max_depth: int = Field(10_000, ge=1)
    # Checked before parsing (a ';' count), so a huge program is refused without the
    # cost of parsing it.
    max_statements: int = Field(50_000, ge=1)
    # Characters between two semicolons. The reference parser needs seconds for one
    # 100 KB expression, and a 16384-term sum overflows the fast importer's stack (a
    # segfault); 8 KiB (a barrier across ~1000 qubits) was measured safe for both, so it
    # is the ceiling, also for programs parsed without settings (the worker).
    max_statement_chars: int = Field(4_000, ge=100, le=8_192)
    # Brackets open at once, and unary operators in a row ("- - - 1"). Real programs stay
    # under ten; ANTLR's prediction turns quadratic on deep nesting long before Python's
    # recursion limit stops it, and the fast importer segfaults (20000 parentheses).
    max_nesting: int = Field(64, ge=1, le=64)
    # Other simulation methods' caps (each lowered further to fit the memory budget; see
    # qmill.server.workload.methods): the density matrix needs 16 * 4**n bytes, the
    # matrix product state 64 * n * bond_dimension**2, the extended stabilizer is
    # limited by Aer to 63 qubits and its run time grows with the T gates.
    max_density_matrix_qubits: int = Field(13, ge=1, le=20)
    max_mps_qubits: int = Field(128, ge=1, le=1000)
    # Matrix product states are truncated to this bond dimension, which bounds their
    # memory and time (and the approximation: entangled circuits need more).
    mps_max_bond_dimension: int = Field(64, ge=2, le=4096)
    max_extended_stabilizer_qubits: int = Field(63, ge=1, le=63)
    # One task's sweep: bindings, and also the expectation values of a broadcast.
    max_sweep_size: int = Field(10_000, ge=1, le=1_000_000)
    # Free parameters one program may have.
    max_parameters: int = Field(1_000, ge=1, le=100_000)
    # Pauli sums one task may evaluate, and their terms in all.
    max_observables: int = Field(1_000, ge=1, le=1_000_000)
    max_observable_terms: int = Field(10_000, ge=1, le=1_000_000)
    # Shots summed over a sweep's bindings (with memory, max_shots bounds that sum).
    max_total_shots: int = Field(10_000_000, ge=1)
    # The most a task's answer may take as JSON, estimated at submit from its shots,
    # bindings and classical bits (every count a distinct outcome, every shot kept with
    # memory): it is stored for result_ttl_seconds and read whole by every GET.
    # 16 MiB: every counts-only answer at max_shots and max_clbits in one register fits
    # (14 MB), and memory at max_shots for registers up to ~80 bits; 128 one-bit
    # registers with memory at 100k shots (53 MB estimated) do not. The answer is also
    # charged to the tenant's storage quota ([redis] tenant_storage_mb).
    max_result_bytes: int = Field(16 * 1024 * 1024, ge=1024 * 1024)
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    max_batch_tasks: int = Field(1000, ge=1)
    # A task's tags (``tags``: key -> value), kept with its record and indexed for
    # ``GET /tasks?tag=``: each distinct tag is one more index entry (~100 bytes) per
    # task, so the count is small. 16 covers a project, an experiment, a user and a few
    # labels (Braket allows 50, IBM's job tags are a short list); keys are identifiers
    # (64 characters), values a short description (256).
    max_tags: int = Field(16, ge=0, le=1000)
    max_tag_key_chars: int = Field(64, ge=1, le=1024)
    max_tag_value_chars: int = Field(256, ge=1, le=4096)
    # A simulation that runs longer is stopped (process executor) and fails with `timeout`.
    max_execution_seconds: float = Field(120.0, gt=0)
    # Wall time one request may spend parsing its program(s); past it the submit is a 422.
    # The reference OpenQASM 3 parser needs ~0.4-0.8 ms a statement here, so the default
    # covers a program at max_gates while a hostile 1 MiB program (40-70 s) is cut off.
    max_parse_seconds: float = Field(15.0, gt=0, le=600)
    # Parse processes per submit-function process, for every program too big or too
    # complex to parse inline (qmill.server.qasm.pool), and per result-function process
    # for the circuits it draws (diagram.txt); 0 = one per core this process
    # may run on, since a parse is CPU-bound, and at least two, so that one tenant's
    # share leaves one for the others. Set it where a container's CPU quota is below
    # the cores it sees. Each is a warm fork, started when first needed (a few MB of its
    # own beside the pages it shares; a hostile program may take a few hundred MB until
    # it is killed).
    parse_processes: int = Field(0, ge=0, le=256)
    # How long a request waits for a free parse process before a 503 with Retry-After
    # (three 586 KB programs made a normal one wait 45 s): short, since a parse may
    # hold one for max_parse_seconds.
    max_parse_wait_seconds: float = Field(2.0, ge=0, le=60)
    # The share of the parse processes one tenant (API key) may hold at once (at least
    # one): past it, its own wait ends in a 429, so one tenant cannot hold them all.
    # With auth off every request is the one tenant's, and may use every process.
    tenant_parse_share: float = Field(0.5, gt=0, le=1)
    # Parse time charged to the tenant's rate limit ([auth] rate_per_second): one token
    # per this many seconds of a parse out of line, so at the default 50 tokens/s a
    # tenant can keep about one core parsing (one parse costs at most [auth] burst).
    parse_seconds_per_token: float = Field(0.02, gt=0, le=60)
    # What GET /tasks/{id}/diagram.txt draws (else a 422 before drawing): Qiskit's text
    # drawer's time grows with wires x operations and has no deadline of its own. At
    # 128 wires (qubits plus classical bits) x 500 operations it took ~1.1 s for 0.9 MB
    # of text on one core; 1000 qubits x 100 operations (a Clifford circuit that
    # admission accepts) took 292 s. Past a few hundred operations a drawing is no
    # longer read anyway. The parse process's deadline bounds the rest.
    max_diagram_wires: int = Field(128, ge=1, le=1024)
    max_diagram_operations: int = Field(500, ge=1, le=20_000)


class AuthSettings(_Section):
    """API keys (off for the local embedded run, on in compose and Terraform).

    Keys are never configured in clear: ``api_key_hashes`` (a JSON list in
    ``QMILL_AUTH__API_KEY_HASHES``) and/or ``keys_file`` (one SHA-256 hex per line, a
    mounted secret) hold their hashes. ``qmill key new`` makes a key and its hash.
    """

    enabled: bool = False
    api_key_hashes: list[str] = Field(default_factory=list)
    keys_file: str = ""
    # Token bucket per key, shared by every function instance (Redis). 0 = no limit.
    rate_per_second: float = Field(50.0, ge=0)
    burst: int = Field(200, ge=1)
    # Tasks one key may have pending or processing at once.
    max_in_flight: int = Field(1000, ge=1)
    # How often each function process looks whether keys_file changed (a stat; it is
    # re-read only when it did): a key removed from the file is refused, and one added
    # accepted, within this many seconds, without a restart. A stat every 2 s costs
    # nothing measurable; 0 looks on every request.
    keys_file_check_seconds: float = Field(2.0, ge=0, le=300)


class EmbeddedSettings(_Section):
    """How `make run` / `qmill up` starts the system on one machine."""

    data_dir: Path = Path(".qmill")
    # First of three consecutive loopback ports for the submit, result and health functions
    # (used by the split topology only).
    functions_base_port: int = Field(18001, ge=1, le=65533)
    # "combined": one process on [server] port answers as the gateway does and calls each
    # function's own ASGI app in-process, with no second HTTP hop (the proxy hop cost
    # ~2 ms of CPU a request). "split": the gateway and a process per function, as
    # compose and Kubernetes run them (what the fault tests exercise).
    topology: Literal["combined", "split"] = "combined"
    # Whether `qmill up` starts nats-server / redis-server itself (when the URL is on this
    # machine). False runs the system against servers it did not start: a NATS cluster
    # or a Redis behind Sentinel that an operator runs, as the deployments do.
    start_nats: bool = True
    start_redis: bool = True


class LogSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "text"] = "json"


class TelemetrySettings(_Section):
    """OpenTelemetry traces (qmill.server.telemetry), from submit to result."""

    # Where spans go: an OTLP/HTTP collector's base URL (``http://otel-collector:4318``;
    # spans are POSTed to its ``/v1/traces``). Empty (the default): no SDK is set up and
    # no span is made (measured: the request id and the skipped spans cost 3-5 us of CPU
    # a request together, against 120-140 us recording); most deployments have no
    # collector, and an exporter with nowhere to send would retry and log forever.
    otlp_endpoint: str = ""


class Settings(BaseSettings):
    """Every setting qmill reads; nothing reads the environment anywhere else."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
    )

    server: ServerSettings = ServerSettings()
    nats: NatsSettings = NatsSettings()
    redis: RedisSettings = RedisSettings()
    worker: WorkerSettings = WorkerSettings()
    limits: LimitsSettings = LimitsSettings()
    auth: AuthSettings = AuthSettings()
    embedded: EmbeddedSettings = EmbeddedSettings()
    log: LogSettings = LogSettings()
    telemetry: TelemetrySettings = TelemetrySettings()

    @property
    def ack_wait_seconds(self) -> float:
        """JetStream's ack_wait for the workers' consumer.

        With the thread executor the worker's event loop is frozen while Aer simulates,
        so no in-progress heartbeat can extend the deadline: it must cover a whole run.
        """
        if self.worker.executor == "thread":
            run = self.limits.max_execution_seconds
            return max(self.nats.ack_wait_seconds, run + max(5.0, 0.25 * run))
        return self.nats.ack_wait_seconds

    @property
    def memory_budget_bytes(self) -> int:
        return self.worker.memory_budget_mb * 1024 * 1024

    @property
    def statevector_qubit_limit(self) -> int:
        """The widest statevector circuit accepted: ``max_qubits``, or fewer if its state
        (16 * 2**n bytes) would not fit the worker's memory budget."""
        fits = (self.memory_budget_bytes // 16).bit_length() - 1
        return min(self.limits.max_qubits, fits)

    @property
    def worker_memory_bytes(self) -> int:
        """Memory one worker needs at most: the simulation-state budget plus the worker's
        and each simulating process's own footprint (Python, qiskit, Aer: ~300 MiB
        measured). Container limits are sized from this."""
        processes = self.worker.concurrency + 1
        return self.memory_budget_bytes + processes * PROCESS_OVERHEAD_BYTES

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_path())
        return (init_settings, env_settings, toml)


def config_path() -> Path | None:
    """The TOML file to read: ``$QMILL_CONFIG``, else ``./config.toml`` when it exists."""
    explicit = os.environ.get(CONFIG_PATH_ENV)
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"{CONFIG_PATH_ENV}={explicit}: no such file")
        return path
    default = Path("config.toml")
    return default if default.is_file() else None


def env_name(*keys: str) -> str:
    """The environment variable that sets a key: ``env_name("worker", "processes")``."""
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(k.upper() for k in keys)


def env_names() -> frozenset[str]:
    """Every environment variable qmill reads (for deployment parity tests)."""
    names = {CONFIG_PATH_ENV}
    for section, info in Settings.model_fields.items():
        model = info.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        names.update(env_name(section, key) for key in model.model_fields)
    return frozenset(names)


def load_settings() -> Settings:
    """Read and validate every source; a bad value raises ConfigError naming the key."""
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            keys = [str(part) for part in err["loc"]]
            where = f"[{keys[0]}] {'.'.join(keys[1:])}" if len(keys) > 1 else ".".join(keys)
            problems.append(f"{where} (env {env_name(*keys)}): {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
    except SettingsError as exc:  # an env value that should be JSON (a list) is not
        raise ConfigError(f"invalid configuration: {_json_settings_hint(str(exc))}") from None
    except ValueError as exc:  # a malformed TOML file
        raise ConfigError(f"invalid configuration file: {exc}") from None


def _json_settings_hint(message: str) -> str:
    """pydantic-settings names only the section; name the JSON-valued keys in it."""
    match = re.search(r'field "(\w+)"', message)
    section = match.group(1) if match else ""
    info = Settings.model_fields.get(section)
    model = info.annotation if info else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return message
    keys = [
        key
        for key, field in model.model_fields.items()
        if getattr(field.annotation, "__origin__", None) in (list, dict)
    ]
    where = ", ".join(f"[{section}] {key} (env {env_name(section, key)})" for key in keys)
    return f'{where}: the value must be JSON, for example ["..."] ({message})'


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()


def is_local_url(url: str) -> bool:
    """True when a URL points at this machine, so the embedded run may start a server for it."""
    host = urlsplit(url).hostname or ""
    return host in {"localhost", "127.0.0.1", "::1", "0.0.0.0"} or host.startswith("127.")


def split_servers(url: str) -> list[str]:
    """The URLs of a comma-separated list (``[nats] url``), blanks dropped."""
    return [part.strip() for part in url.split(",") if part.strip()]


def url_port(url: str, default: int) -> int:
    return urlsplit(url).port or default


def _check_url(value: str, schemes: tuple[str, ...]) -> str:
    scheme = urlsplit(value).scheme
    if scheme not in schemes:
        raise ValueError(f"URL scheme must be one of {', '.join(schemes)}, got {value!r}")
    return value
