"""The task queue: a NATS JetStream work-queue stream and the workers' durable pull consumers.

Two lanes on the one stream, each with its own durable consumer: the normal lane
(``TASK_SUBJECT``) and the bulk lane (``BULK_TASK_SUBJECT``) for a tenant's tasks beyond
its first ``[nats] tenant_priority_tasks`` unfinished ones. A worker takes from the bulk
lane only when the normal lane is empty (`Bus.fetch_next`), so one tenant's backlog
waits behind every other tenant's first tasks instead of in front of them.

Only task ids travel on the bus. A publish carries ``Nats-Msg-Id: <task_id>``, so a
publish retried after a lost ack is stored once. Workers ack only after the result
is in Redis, with a confirmed ack; a task nobody acks is redelivered after
``ack_wait``, without a delivery bound (`MAX_DELIVER`): the worker counts attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import APIError, NotFoundError

from qmill.server import constants, jetstream, telemetry
from qmill.server.config import Settings
from qmill.server.errors import DependencyUnavailable
from qmill.server.models import TaskMessage

log = logging.getLogger(__name__)

_NATS_FAILURES = (NatsError, TimeoutError, OSError, ConnectionError)
# Status codes of pull-request replies (`Bus._fetch_now`).
_NO_MESSAGES = "404"
_REQUEST_TIMEOUT = "408"
_HEARTBEAT = "100"


# Publishes in a row that got no JetStream ack before a client of several servers moves to
# another: its server may be cut off from the cluster (its routes down, its clients still
# connected, so nats-py sees nothing wrong), and then every publish through it fails until
# the partition heals. Two, so one slow ack (a leader election, ~5 s) costs at most a
# reconnect (milliseconds), while a cut-off server holds submits for ~2 publish timeouts.
PUBLISH_FAILURES_BEFORE_SWITCH = 2

# A full task stream drains as workers finish tasks: seconds, not minutes.
QUEUE_FULL_RETRY_AFTER_SECONDS = 5


def _stream_full(exc: APIError) -> bool:
    """JetStream refused a publish because the stream is at one of its limits
    (`stream_config`): "maximum messages exceeded", "maximum bytes exceeded" (error
    code 10077 on current servers), or "message size exceeds maximum allowed"."""
    text = (exc.description or "").lower()
    return exc.err_code == _JS_STREAM_STORE_FAILED or "maximum" in text


_JS_STREAM_STORE_FAILED = 10077


def stream_config(settings: Settings) -> js_api.StreamConfig:
    return js_api.StreamConfig(
        name=constants.STREAM_NAME,
        subjects=list(constants.STREAM_SUBJECTS),
        retention=js_api.RetentionPolicy.WORK_QUEUE,
        storage=js_api.StorageType.FILE,
        duplicate_window=settings.nats.duplicate_window_seconds,
        num_replicas=settings.nats.stream_replicas,
        # Bounded, and full means "refuse the publish" (503), never "drop a queued task"
        # (the default, DiscardPolicy.OLD, would delete the oldest queued task silently).
        max_msgs=settings.nats.stream_max_msgs,
        max_bytes=settings.nats.stream_max_bytes,
        max_msg_size=settings.nats.stream_max_msg_size,
        discard=js_api.DiscardPolicy.NEW,
    )


class Lane(StrEnum):
    """Which of the stream's subjects (and consumers) a task is queued on."""

    NORMAL = "normal"
    BULK = "bulk"

    @property
    def subject(self) -> str:
        return constants.TASK_SUBJECT if self is Lane.NORMAL else constants.BULK_TASK_SUBJECT

    @property
    def consumer(self) -> str:
        return constants.WORKER_CONSUMER if self is Lane.NORMAL else constants.BULK_WORKER_CONSUMER


# The consumers' max_deliver: unbounded. A stopping worker (scale-in, a platform's
# termination deadline) hands its running tasks back, and a hand-back is a delivery
# but not an attempt; with max_deliver = max_attempts + 1 every scale-in burnt one of a
# task's attempts, and JetStream silently dropped a task whose deliveries were spent
# (left `processing` for ever). The worker bounds attempts instead, from the task
# record (the start transition counts one, a hand-back takes it back:
# ``WorkerTasks.release``): the delivery after ``[worker] max_attempts`` attempts only
# marks the task failed, so a task that kills every worker that runs it still ends.
MAX_DELIVER = -1


def consumer_config(settings: Settings, lane: Lane = Lane.NORMAL) -> js_api.ConsumerConfig:
    return js_api.ConsumerConfig(
        name=lane.consumer,
        durable_name=lane.consumer,
        ack_policy=js_api.AckPolicy.EXPLICIT,
        deliver_policy=js_api.DeliverPolicy.ALL,
        ack_wait=settings.ack_wait_seconds,
        max_deliver=MAX_DELIVER,
        filter_subject=lane.subject,
        max_ack_pending=-1,
    )


Subscriptions = dict[Lane, JetStreamContext.PullSubscription]


class Bus:
    """One NATS connection per process, connected lazily and reconnecting by itself."""

    def __init__(self, settings: Settings, *, name: str) -> None:
        self._settings = settings
        self._name = name
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._lock = asyncio.Lock()
        self._closing = False
        self._failed_at = -1e9  # monotonic time of the last failed connect
        self._publish_failures = 0  # in a row (see PUBLISH_FAILURES_BEFORE_SWITCH)

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def connect(self) -> JetStreamContext:
        """Connect (once) and make sure the stream exists; raises DependencyUnavailable."""
        if self._js is not None and self._nc is not None and not self._nc.is_closed:
            return self._js
        timeout = self._settings.nats.connect_timeout_seconds
        if time.monotonic() - self._failed_at < timeout:
            # Just failed: answer 503 now instead of queueing every request behind
            # another connect attempt.
            raise DependencyUnavailable("nats", "unreachable", retry_after=2)
        async with self._lock:
            if self._js is not None and self._nc is not None and not self._nc.is_closed:
                return self._js
            try:
                return await self._connect(timeout)
            except DependencyUnavailable:
                self._failed_at = time.monotonic()
                raise

    async def _connect(self, timeout: float) -> JetStreamContext:
        nc = NATS()
        try:
            # With unlimited reconnects nats-py retries the *first* connect forever
            # too; bound it, so a function answers 503 instead of hanging.
            await asyncio.wait_for(
                nc.connect(
                    # Every server of a cluster: nats-py connects to one and, when it
                    # goes, reconnects to another (and to those the servers announce).
                    servers=self._settings.nats.servers,
                    name=self._name,
                    connect_timeout=max(1, round(timeout)),
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    # A publish made while disconnected must fail now (503), not be
                    # buffered and sent later for a task the caller was told we refused.
                    pending_size=0,
                    error_cb=self._on_error,
                    disconnected_cb=self._on_disconnected,
                    reconnected_cb=self._on_reconnected,
                ),
                timeout,
            )
        except (*_NATS_FAILURES, asyncio.CancelledError) as exc:
            with contextlib.suppress(*_NATS_FAILURES):
                await nc.close()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise DependencyUnavailable("nats", str(exc) or type(exc).__name__) from exc
        js = nc.jetstream(timeout=timeout)
        try:
            # The consumers too, not only the stream: before any worker has run, the
            # queue KEDA scales on must exist (created only if missing: a function
            # never rewrites the consumer a worker or qmill-setup configured).
            await self.ensure(js, update_consumers=False)
        except (*_NATS_FAILURES, DependencyUnavailable) as exc:
            await nc.close()
            if isinstance(exc, jetstream.PlacementRefused):
                log.error("nats stream not placed", extra={"error": exc.message})
            if isinstance(exc, DependencyUnavailable):
                raise
            raise DependencyUnavailable("nats", f"JetStream: {exc}") from exc
        self._nc, self._js = nc, js
        return js

    async def ensure(
        self, js: JetStreamContext, *, update_consumers: bool
    ) -> list[jetstream.Ensured]:
        """The stream as configured, then both lanes' consumers (see `qmill.server.jetstream`)."""
        stream = await jetstream.ensure_stream(js, stream_config(self._settings))
        configs = [consumer_config(self._settings, lane) for lane in Lane]
        consumers = await jetstream.ensure_consumers(
            js, constants.STREAM_NAME, configs, update=update_consumers
        )
        return [stream, *consumers]

    async def ensure_consumer(self) -> None:
        """Both lanes' consumers as this process configures them (a worker's)."""
        js = await self.connect()
        configs = [consumer_config(self._settings, lane) for lane in Lane]
        try:
            await jetstream.ensure_consumers(js, constants.STREAM_NAME, configs, update=True)
        except _NATS_FAILURES as exc:
            raise DependencyUnavailable("nats", f"consumer: {exc}") from exc

    async def publish(self, task_id: str, state_bytes: int = 0, lane: Lane = Lane.NORMAL) -> None:
        """Queue a task; returns once JetStream has stored it, else DependencyUnavailable."""
        js = await self.connect()
        if not self.connected:
            raise DependencyUnavailable("nats", "not connected (reconnecting)", retry_after=2)
        payload = TaskMessage(task_id=task_id, state_bytes=state_bytes).model_dump_json().encode()
        attributes = {"qmill.task_id": task_id, "messaging.destination.name": lane.subject}
        span = telemetry.span("qmill.publish", telemetry.SpanKind.PRODUCER, attributes)
        try:
            with span:  # headers: the request id and this span's traceparent
                await js.publish(
                    lane.subject,
                    payload,
                    timeout=self._settings.nats.publish_timeout_seconds,
                    headers=telemetry.message_headers(task_id),
                )
        except APIError as exc:
            if _stream_full(exc):
                raise DependencyUnavailable(
                    "nats",
                    f"the task queue is full ({exc.description}; [nats] stream_max_msgs "
                    "and stream_max_bytes): nothing was queued, retry when it has drained",
                    retry_after=QUEUE_FULL_RETRY_AFTER_SECONDS,
                ) from exc
            raise DependencyUnavailable("nats", f"publish: {exc}", retry_after=2) from exc
        except _NATS_FAILURES as exc:
            await self._publish_failed()
            raise DependencyUnavailable("nats", f"publish: {exc}", retry_after=2) from exc
        self._publish_failures = 0

    async def _publish_failed(self) -> None:
        """After PUBLISH_FAILURES_BEFORE_SWITCH failed publishes in a row, reconnect to
        another of ``[nats] url``'s servers (nats-py shuffles them; a pick of the same one
        is switched away from again after as many failures)."""
        self._publish_failures += 1
        if (
            self._publish_failures >= PUBLISH_FAILURES_BEFORE_SWITCH
            and len(self._settings.nats.servers) > 1
            and self._nc is not None
        ):
            self._publish_failures = 0
            log.warning("nats publishes failing: switching server")
            await self._nc.force_reconnect()

    async def signal_cancel(self, task_id: str) -> None:
        """Best effort: tell whichever worker runs ``task_id`` to stop it.

        Core NATS, not JetStream: if no worker runs it, nobody needs the message; the
        task is already `cancelled` in Redis, which is what makes a later run a no-op.
        """
        try:
            await self.connect()
            if self._nc is not None and self._nc.is_connected:
                await self._nc.publish(constants.CANCEL_SUBJECT, task_id.encode())
        except (DependencyUnavailable, *_NATS_FAILURES) as exc:
            log.warning("cancel signal not sent", extra={"task_id": task_id, "error": str(exc)})

    async def subscribe_cancels(self, callback: Callable[[str], None]) -> None:
        await self.connect()
        assert self._nc is not None

        async def on_message(msg: Msg) -> None:
            callback(msg.data.decode(errors="replace"))

        await self._nc.subscribe(constants.CANCEL_SUBJECT, cb=on_message)

    async def pull_subscription(self) -> JetStreamContext.PullSubscription:
        """The normal lane's pull subscription."""
        return await self._pull_subscription(Lane.NORMAL)

    async def pull_subscriptions(self) -> Subscriptions:
        """One pull subscription per lane, bound to the lanes' durable consumers."""
        return {
            Lane.NORMAL: await self.pull_subscription(),
            Lane.BULK: await self._pull_subscription(Lane.BULK),
        }

    async def _pull_subscription(self, lane: Lane) -> JetStreamContext.PullSubscription:
        js = await self.connect()
        await self.ensure_consumer()
        return await js.pull_subscribe_bind(consumer=lane.consumer, stream=constants.STREAM_NAME)

    async def fetch_next(self, subs: Subscriptions, timeout: float) -> list[Msg]:
        """The next task, normal lane first: at most one message, [] if none came.

        Each lane is asked without waiting (a bulk task is taken only when no normal
        one is queued at that moment); when both are empty, waits up to ``timeout`` on
        the normal lane, so an idle worker starts a normal task at once and a bulk one
        within ``timeout``.
        """
        return await self.fetch_up_to(subs, 1, timeout)

    async def fetch_up_to(
        self, subs: Subscriptions, count: int, timeout: float, *, wait: bool = True
    ) -> list[Msg]:
        """`fetch_next` for up to ``count`` tasks: what the normal lane has right now,
        then the bulk lane's for the rest, in one request per lane (a worker that runs
        small tasks together takes as many as it can use at once). Without ``wait``,
        [] at once when the lanes are empty; ``subs`` may hold only some lanes."""
        msgs: list[Msg] = []
        for lane in Lane:
            if lane not in subs:  # a caller that takes only some lanes
                continue
            msgs += await self._fetch_now(subs[lane], timeout, count - len(msgs))
            if len(msgs) >= count:
                return msgs
        if msgs or not wait:
            return msgs
        try:
            return await subs[Lane.NORMAL].fetch(batch=1, timeout=timeout)
        except TimeoutError:
            return []

    async def _fetch_now(
        self, sub: JetStreamContext.PullSubscription, timeout: float, count: int = 1
    ) -> list[Msg]:
        """Up to ``count`` messages the lane has right now: a ``no_wait`` pull request.

        nats-py's ``fetch(batch=1)`` always lingers on the server until its timeout, so
        this sends the request itself (private ``_sub``, ``_nms``, ``_deliver``, as
        `undelivered` reads ``_pending_queue``). Deliveries that were already in the
        subscription's queue (from an earlier request that outlived its fetch) come
        first; one that arrives after we stop waiting stays queued for the next call.
        The server answers a request it cannot fill with the messages it has, then a
        404; one it fills, with the messages alone.
        """
        msgs: list[Msg] = []
        queue: asyncio.Queue[Msg] = sub._sub._pending_queue
        while not queue.empty() and len(msgs) < count:
            msg = queue.get_nowait()
            sub._sub._pending_size -= len(msg.data)
            if not JetStreamContext.is_status_msg(msg):
                msgs.append(msg)
        if len(msgs) >= count:
            return msgs
        if self._nc is None:
            raise DependencyUnavailable("nats", "not connected")
        request = json.dumps({"batch": count - len(msgs), "no_wait": True}).encode()
        await self._nc.publish(sub._nms, request, sub._deliver)
        deadline = time.monotonic() + timeout
        while len(msgs) < count and (left := deadline - time.monotonic()) > 0:
            try:
                msg = await sub._sub.next_msg(timeout=left)
            except TimeoutError:
                return msgs
            status = JetStreamContext.is_status_msg(msg)
            if not status:
                msgs.append(msg)
                continue
            if status in (_NO_MESSAGES, _REQUEST_TIMEOUT, _HEARTBEAT):
                # 404: the lane has no more. 408 and 100 answer earlier lingering requests.
                if status == _NO_MESSAGES:
                    return msgs
                continue
            return msgs  # 409 and the like (a consumer limit): try again next round
        return msgs

    @staticmethod
    def undelivered(sub: JetStreamContext.PullSubscription) -> list[Msg]:
        """Deliveries already in ``sub``'s queue that no fetch has returned yet.

        A pull request can outlive the fetch that sent it: nats-py returns at its own
        timeout, or with fewer messages than it asked for, while the server still holds
        the request and delivers the next task into the subscription's queue. That task
        is ours (its ack timer runs) although the worker has not seen it; the next fetch
        returns it first. A worker whose slots are full keeps such deliveries alive
        (`in_progress`) so JetStream does not hand them to a second worker meanwhile.
        Reads nats-py's private queue (``_sub._pending_queue``); the in-process worker
        test of a task delivered while every slot is busy fails if that changes.
        """
        queue: asyncio.Queue[Msg] = sub._sub._pending_queue
        held: list[Msg] = list(getattr(queue, "_queue", ()))
        return [msg for msg in held if not JetStreamContext.is_status_msg(msg)]

    async def ping(self) -> bool:
        """True if the server answers a round trip and JetStream is on."""
        try:
            js = await self.connect()
            if self._nc is None or not self._nc.is_connected:
                return False
            await js.stream_info(constants.STREAM_NAME)
            return True
        except (DependencyUnavailable, *_NATS_FAILURES):
            return False

    async def pending(self) -> int:
        """Tasks queued or held unacked by workers, in both lanes (what KEDA scales on)."""
        js = await self.connect()
        total = 0
        for lane in Lane:
            try:
                info = await js.consumer_info(constants.STREAM_NAME, lane.consumer)
            except NotFoundError:
                continue  # a lane no worker has created yet holds nothing
            total += int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        return total

    async def close(self) -> None:
        # close() flushes what is buffered; drain() would wait out its 30 s timeout on
        # the pull subscription, and every ack we care about was already confirmed.
        self._closing = True
        if self._nc is not None:
            with contextlib.suppress(*_NATS_FAILURES):
                await self._nc.close()
        self._nc = self._js = None

    async def _on_error(self, exc: Exception) -> None:
        if self._closing:
            return
        log.warning("nats error", extra={"error": str(exc) or type(exc).__name__})

    async def _on_disconnected(self) -> None:
        if not self._closing:
            log.warning("nats disconnected")

    async def _on_reconnected(self) -> None:
        log.info("nats reconnected")


def describe(settings: Settings) -> dict[str, Any]:
    """The stream and consumer names and limits, for `qmill config` and infra parity tests."""
    return {
        "stream": constants.STREAM_NAME,
        "subject": constants.TASK_SUBJECT,
        "consumer": constants.WORKER_CONSUMER,
        "bulk_subject": constants.BULK_TASK_SUBJECT,
        "bulk_consumer": constants.BULK_WORKER_CONSUMER,
        "tenant_priority_tasks": settings.nats.tenant_priority_tasks,
        "ack_wait_seconds": settings.ack_wait_seconds,
        "max_deliver": MAX_DELIVER,
        "max_attempts": settings.worker.max_attempts,
    }
