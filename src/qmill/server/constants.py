"""Every name that two processes must agree on: Redis keys, NATS subjects, streams, routes.

Infrastructure code (compose, Terraform, KEDA) is tested against these values, so
change them here and nowhere else (routes: in `qmill.server.routes`, which ROUTES here
is derived from).
"""

from __future__ import annotations

from typing import Final

from qmill.server import routes

# --- Redis -------------------------------------------------------------------------------
REDIS_PREFIX: Final = "qmill:"
TASK_KEY_PREFIX: Final = REDIS_PREFIX + "task:"
# Published (Redis pub/sub) when a task reaches a terminal state; payload is the status.
TASK_DONE_CHANNEL_PREFIX: Final = REDIS_PREFIX + "done:"
# Worker liveness: one key per worker with a TTL, refreshed while its event loop runs.
WORKER_HEARTBEAT_PREFIX: Final = REDIS_PREFIX + "worker:"
# Idempotency-Key -> the task it created (and a hash of the body it came with).
IDEMPOTENCY_PREFIX: Final = REDIS_PREFIX + "idem:"


def task_key(task_id: str) -> str:
    return TASK_KEY_PREFIX + task_id


def task_done_channel(task_id: str) -> str:
    return TASK_DONE_CHANNEL_PREFIX + task_id


def worker_heartbeat_key(worker_id: str) -> str:
    return WORKER_HEARTBEAT_PREFIX + worker_id


def idempotency_key(digest: str) -> str:
    return IDEMPOTENCY_PREFIX + digest


# Per tenant: a token bucket, and the set of its unfinished task ids.
RATE_KEY_PREFIX: Final = REDIS_PREFIX + "rate:"
INFLIGHT_KEY_PREFIX: Final = REDIS_PREFIX + "inflight:"


def rate_key(tenant: str) -> str:
    return RATE_KEY_PREFIX + tenant


def inflight_key(tenant: str) -> str:
    return INFLIGHT_KEY_PREFIX + tenant


# Per tenant: its charged task ids scored by when each charge lapses, and the bytes each
# is charged with their total (`qmill.server.store.quotas`).
QUOTA_KEY_PREFIX: Final = REDIS_PREFIX + "quota:"
QUOTA_BYTES_KEY_PREFIX: Final = REDIS_PREFIX + "quota-bytes:"


def quota_key(tenant: str) -> str:
    return QUOTA_KEY_PREFIX + tenant


def quota_bytes_key(tenant: str) -> str:
    return QUOTA_BYTES_KEY_PREFIX + tenant


# A task's answer when it is stored compressed (`qmill.server.store.answers`): apart
# from the record, so reading a record never reads a big answer with it.
ANSWER_KEY_PREFIX: Final = REDIS_PREFIX + "answer:"


def answer_key(task_id: str) -> str:
    return ANSWER_KEY_PREFIX + task_id


# Per tenant: the long-polls it has open, each scored by when its lease runs out.
LONG_POLLS_KEY_PREFIX: Final = REDIS_PREFIX + "polls:"
# The tenant of every request when auth is off (no API key names one): not a key hash
# prefix (hex), so it cannot collide with a real tenant.
ANONYMOUS_TENANT: Final = "anonymous"


def long_polls_key(tenant: str) -> str:
    return LONG_POLLS_KEY_PREFIX + tenant


# A batch: the list of its task ids.
BATCH_KEY_PREFIX: Final = REDIS_PREFIX + "batch:"


def batch_key(batch_id: str) -> str:
    return BATCH_KEY_PREFIX + batch_id


# Per tenant: a sorted set of every task it submitted (all scores 0, ordered by member:
# creation time, position in its batch, id; `qmill.server.store.listing`), and one per
# tag it used, named by a hash of the tag so any value makes a short, safe key name.
LISTING_KEY_PREFIX: Final = REDIS_PREFIX + "list:"
LISTING_TAG_KEY_PREFIX: Final = REDIS_PREFIX + "list-tag:"


def listing_key(tenant: str) -> str:
    return LISTING_KEY_PREFIX + tenant


def listing_tag_key(tenant: str, tag_digest: str) -> str:
    return f"{LISTING_TAG_KEY_PREFIX}{tenant}:{tag_digest}"


# Change events (`qmill.server.store.events`): one global counter gives every status
# transition its version (the record's ``seq``, the SSE ``id``), and each transition is
# PUBLISHed on its task's channel and, for a task of a batch, on its batch's.
EVENTS_SEQ_KEY: Final = REDIS_PREFIX + "events:seq"
EVENT_CHANNEL_PREFIX: Final = REDIS_PREFIX + "events:"
TASK_EVENTS_CHANNEL_PREFIX: Final = EVENT_CHANNEL_PREFIX + "task:"
BATCH_EVENTS_CHANNEL_PREFIX: Final = EVENT_CHANNEL_PREFIX + "batch:"
# Per tenant: the event streams (GET /events) it has open, scored like LONG_POLLS_KEY_PREFIX.
EVENT_STREAMS_KEY_PREFIX: Final = REDIS_PREFIX + "streams:"


def task_events_channel(task_id: str) -> str:
    return TASK_EVENTS_CHANNEL_PREFIX + task_id


def batch_events_channel(batch_id: str) -> str:
    return BATCH_EVENTS_CHANNEL_PREFIX + batch_id


def event_streams_key(tenant: str) -> str:
    return EVENT_STREAMS_KEY_PREFIX + tenant


# --- NATS JetStream -----------------------------------------------------------------------
STREAM_NAME: Final = "QMILL_TASKS"
TASK_SUBJECT: Final = "qmill.server.tasks.run"
STREAM_SUBJECTS: Final = ("qmill.server.tasks.>",)
# The bulk lane: a tenant's tasks beyond its first few unfinished ones (see
# `[nats] tenant_priority_tasks`). Same stream; workers take from it only when the normal
# lane (TASK_SUBJECT) is empty, so one tenant's big backlog cannot starve another's.
BULK_TASK_SUBJECT: Final = "qmill.server.tasks.bulk"
# Core NATS (not stored): "stop this task if you are running it", payload the task id.
CANCEL_SUBJECT: Final = "qmill.cancel"
# The durable pull consumer every worker replica shares (KEDA scales on its pending count).
WORKER_CONSUMER: Final = "qmill-workers"
# The durable pull consumer of the bulk lane, shared the same way (autoscaling must count
# its pending tasks too: work waits there while the normal lane is empty).
BULK_WORKER_CONSUMER: Final = "qmill-workers-bulk"
# JetStream fsyncs every write before it acks a publish, so a 201 survives power loss
# (the server default of 2 minutes is how Jepsen lost acknowledged writes in NATS 2.12.1).
# Measured here: 0.42 ms per sequential publish instead of 0.21 ms; 4.5k publishes/s.
NATS_SYNC_INTERVAL: Final = "always"
# Redis fsyncs its append-only file before it answers a write, for the same reason: with
# `everysec` a power loss could take the last second of records and results whose tasks
# were already accepted or acked (docs/reliability.md). Measured here: 0.29 ms per write
# transaction from one client instead of 0.15 ms; ~10k/s from 32 clients instead of ~11k.
REDIS_APPENDFSYNC: Final = "always"
# A full Redis refuses writes instead of evicting keys: an evicted key would be a task
# record or a result lost without a word ([redis] max_memory_mb says how full is full).
REDIS_MAXMEMORY_POLICY: Final = "noeviction"
# The task stream is on file storage; memory storage is not used, so it gets little.
NATS_MAX_MEMORY_STORE: Final = 64 * 1024 * 1024

# --- HTTP ----------------------------------------------------------------------------------
FUNCTION_NAMES: Final = ("submit", "result", "health")
# (method, pattern, function) in match order, derived from the route table
# (`qmill.server.routes.ROUTES`, see `Route.proxied`): what nginx, the Ingress, the URL map
# and Terraform's shared constants are checked against. A pattern is an exact path, a
# prefix ending in "/" that takes one more path segment (the id), or a path with one
# "{id}" segment.
ROUTES: Final = tuple(route.proxied for route in routes.ROUTES)
IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
# A request's id: kept from the client when valid (qmill.server.logs.request_id_of), else
# made by the front door; returned on the answer, logged on every line of the request and
# carried in the task's NATS message to the worker's lines about it.
REQUEST_ID_HEADER: Final = "X-Request-ID"

# What ``GET /tasks/{id}?include=`` may name (comma-separated); anything else is a 422.
INCLUDABLE: Final = ("circuit",)
