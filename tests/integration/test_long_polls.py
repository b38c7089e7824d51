"""The per-tenant cap on open long-polls (store/polls.py) against a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from qmill.server import constants
from qmill.server.errors import RateLimited
from qmill.server.store import Stores, polls


async def test_a_tenant_holds_at_most_cap_polls_and_a_slot_frees_when_one_answers(
    stores: Stores,
) -> None:
    async with contextlib.AsyncExitStack() as held:
        for _ in range(3):
            await held.enter_async_context(stores.polls.hold("t1", 3, 30))
        with pytest.raises(RateLimited) as refused:
            await held.enter_async_context(stores.polls.hold("t1", 3, 30))
        # Told to come back soon (a slot frees as any poll answers), never at once, and
        # never so late that a client gives up instead.
        retry_after = refused.value.retry_after
        assert retry_after is not None and 1 <= retry_after <= polls.RETRY_AFTER_MAX_SECONDS
        assert refused.value.status_code == 429 and "max_long_polls_per_tenant" in str(
            refused.value
        )
        # Another tenant (or everyone, with auth off) has slots of its own.
        await held.enter_async_context(stores.polls.hold(constants.ANONYMOUS_TENANT, 3, 30))
    # Every poll released its slot as it ended.
    assert await stores.client.redis.zcard(constants.long_polls_key("t1")) == 0
    async with stores.polls.hold("t1", 3, 30):
        pass


async def test_a_slot_of_a_poll_that_never_ended_lapses(
    stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A function killed mid-poll never releases its slot: the lease runs out instead."""
    monkeypatch.setattr(polls, "LEASE_MARGIN_SECONDS", 0.0)
    abandoned = stores.polls.hold("t2", 1, 0.3)
    await abandoned.__aenter__()  # and never __aexit__, as if the process died
    with pytest.raises(RateLimited):
        await stores.polls.hold("t2", 1, 0.3).__aenter__()
    await asyncio.sleep(0.5)
    async with stores.polls.hold("t2", 1, 0.3):
        pass
