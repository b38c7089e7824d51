"""The JetStream stream and consumer against a real nats-server."""

from __future__ import annotations

import uuid

import pytest

from qmill.server import bus as bus_module
from qmill.server import constants
from qmill.server.bus import Bus
from qmill.server.config import Settings
from qmill.server.errors import DependencyUnavailable
from tests.conftest import free_port


def _v(value: object) -> object:
    return getattr(value, "value", value)


async def test_stream_is_a_file_backed_work_queue(bus: Bus) -> None:
    js = await bus.connect()
    info = await js.stream_info(constants.STREAM_NAME)
    assert _v(info.config.retention) == "workqueue"
    assert _v(info.config.storage) == "file"
    assert info.config.subjects == list(constants.STREAM_SUBJECTS)


async def test_retried_publish_is_stored_once(bus: Bus) -> None:
    task_id = str(uuid.uuid4())
    await bus.publish(task_id)
    await bus.publish(task_id)  # e.g. a retry after a lost publish ack
    js = await bus.connect()
    assert (await js.stream_info(constants.STREAM_NAME)).state.messages == 1


async def test_consumer_settings_follow_config(bus: Bus, settings: Settings) -> None:
    await bus.ensure_consumer()
    js = await bus.connect()
    info = await js.consumer_info(constants.STREAM_NAME, constants.WORKER_CONSUMER)
    # Unbounded: a hand-back is a delivery, not an attempt; the worker counts attempts.
    assert info.config.max_deliver == bus_module.MAX_DELIVER == -1
    assert info.config.ack_wait == pytest.approx(settings.ack_wait_seconds)
    assert _v(info.config.ack_policy) == "explicit"


async def test_a_consumer_created_with_a_delivery_bound_loses_it(
    bus: Bus, settings: Settings
) -> None:
    """A deployment upgraded from max_deliver = max_attempts + 1: ensuring the consumers
    again (a worker, qmill-setup) lifts the bound, or scale-ins would still spend it."""
    js = await bus.connect()
    old = bus_module.consumer_config(settings)
    old.max_deliver = settings.worker.max_attempts + 1
    await js.add_consumer(constants.STREAM_NAME, old)
    await bus.ensure_consumer()
    info = await js.consumer_info(constants.STREAM_NAME, constants.WORKER_CONSUMER)
    assert info.config.max_deliver == -1


async def test_unreachable_nats_is_dependency_unavailable(settings: Settings) -> None:
    dead = settings.model_copy(
        update={"nats": settings.nats.model_copy(update={"url": f"nats://127.0.0.1:{free_port()}"})}
    )
    bus = Bus(dead, name="dead")
    with pytest.raises(DependencyUnavailable):
        await bus.publish(str(uuid.uuid4()))
    assert await bus.ping() is False
