"""Scale from zero: the queue exists before any worker ever ran (issue 16).

KEDA scales workers on the durable consumer's pending count; with no worker running
nothing used to create that consumer, so nothing was ever pending and no worker
started. ``qmill-setup`` (run by the deployments before any worker) creates the stream
and both consumers as the workers configure them, and a function that connects
creates what is missing, so a task submitted before any worker started is counted.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from qmill.server import bus as bus_module
from qmill.server import constants, jetstream, setup
from qmill.server.bus import Bus, Lane
from qmill.server.config import Settings
from qmill.server.launcher import settings_env

SETUP = Path(__file__).resolve().parents[2] / ".venv/bin/qmill-setup"


def qmill_setup(settings: Settings) -> subprocess.CompletedProcess[str]:
    """``qmill-setup`` as a deployment runs it: a process configured by QMILL_* only."""
    return subprocess.run(
        [str(SETUP), "--wait", "10"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_qmill_setup_creates_the_workers_consumers_and_a_rerun_changes_nothing(
    settings: Settings, clean: None
) -> None:
    first = qmill_setup(settings)
    assert first.returncode == 0, first.stderr
    assert "stream QMILL_TASKS created" in first.stdout
    probe = Bus(settings, name="test-probe")
    js = await probe.connect()
    try:
        created = {}
        for lane in Lane:
            info = await js.consumer_info(constants.STREAM_NAME, lane.consumer)
            wanted = bus_module.consumer_config(settings, lane).as_dict()
            assert jetstream.differs(wanted, info.config.as_dict()) == [], lane
            created[lane] = info.created
            assert f"consumer {lane.consumer} created" in first.stdout
        again = qmill_setup(settings)
        assert again.returncode == 0, again.stderr
        assert again.stdout.count("unchanged") == 3, again.stdout
        for lane in Lane:
            info = await js.consumer_info(constants.STREAM_NAME, lane.consumer)
            assert info.created == created[lane]  # not deleted and made again
    finally:
        await probe.close()


async def test_qmill_setup_names_the_replicas_a_single_server_cannot_hold(
    settings: Settings, clean: None
) -> None:
    three = settings.model_copy(
        update={"nats": settings.nats.model_copy(update={"stream_replicas": 3})}
    )
    with pytest.raises(jetstream.PlacementRefused, match=r"\[nats\] stream_replicas = 3"):
        await setup.apply(three, wait=5)


async def test_a_task_queued_before_any_worker_waits_on_the_consumer(bus: Bus) -> None:
    """No qmill-setup and no worker: the function's own connect made the consumer, so a
    submit's publish is counted where KEDA looks."""
    await bus.publish(str(uuid.uuid4()))
    js = await bus.connect()
    info = await js.consumer_info(constants.STREAM_NAME, constants.WORKER_CONSUMER)
    assert (info.num_pending, info.num_ack_pending) == (1, 0)
    assert await bus.pending() == 1
