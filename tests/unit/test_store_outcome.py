"""The transition outcomes name every terminal status, and nothing else but ok/missing."""

from __future__ import annotations

from qmill.server.models import TERMINAL_STATUSES
from qmill.server.store import Outcome


def test_a_kept_final_state_is_an_outcome() -> None:
    kept = {o.value for o in Outcome} - {Outcome.APPLIED.value, Outcome.MISSING.value}
    assert kept == {s.value for s in TERMINAL_STATUSES}
    assert all(Outcome(s.value) == s for s in TERMINAL_STATUSES)
