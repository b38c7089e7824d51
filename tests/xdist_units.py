"""How `make test` splits the suite between two pytest-xdist workers.

The suite mostly waits (for servers and workers to start, for simulations, for timeouts):
run in one process it kept 0.66 of the machine's 2 cores busy. ``make test`` runs it on two
workers (``-n 2 --dist loadscope``) and tests/conftest.py hands xdist this scheduler,
which gives out *work units*; a unit runs on one worker, its tests in collection order:

* a test module is a unit, so a module-scoped system starts once and a module's tests run
  in the order they are written;
* the modules that name the package-scoped ``default_system`` (tests/e2e/conftest.py) are
  one unit, so that system starts once, not once per worker;
* the LOAD_SENSITIVE modules are one unit, run first and alone (the other worker waits):
  the fault scenarios (each drives its own cluster hard and kills parts of it) and the
  tests that bound a time on the shared machine see it as a run on one worker does.
  Everything else runs on both workers after it.

Each worker has its own session ``servers`` (nats-server, redis-server on free ports),
and every process a test starts is its worker's descendant, so the tests that look for
leftover processes (their own children) see only their own worker's.

pytest-xdist's own ``--dist loadgroup`` (units by an ``xdist_group`` mark) does not work
with pytest 9.2: it renames each test by writing ``item._nodeid``, which pytest 9.2 no
longer reads, so every test became a unit of its own. Units by path need no marks.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from xdist.scheduler import LoadScopeScheduling

if TYPE_CHECKING:
    from xdist.remote import Producer
    from xdist.workermanage import WorkerController

REPO = Path(__file__).resolve().parents[1]

LOAD_SENSITIVE_UNIT = "load-sensitive"
# Path prefixes (from the repository root) of the load-sensitive unit, and what each bounds.
LOAD_SENSITIVE = (
    "tests/faults/",  # every scenario: a cluster driven hard, processes killed, 503s bounded
    "tests/e2e/test_abuse.py",  # a Bell submit answered in < 1.5 s while a parse bomb runs
    "tests/e2e/test_auth.py",  # a revoked key refused within keys_file_check_seconds
    "tests/e2e/test_gateway_limits.py",  # /health in < 5 s with 400 long-polls open
    "tests/integration/test_parse_pool.py",  # the parse deadline; a 503 within 2 s
    "tests/integration/test_long_polls.py",  # 50 long-polls released within 5 s
    "tests/integration/test_batches_rollback.py",  # publish timeouts at once, not in turn
    "tests/integration/test_batches.py",  # a batch long-poll woken within 2 s
    "tests/integration/test_executors.py",  # a busy simulation stopped within 5 s
    "tests/integration/test_worker_release.py",  # a late hand-back seen within 3 s, not ack_wait
)
DEFAULT_SYSTEM_UNIT = "e2e-default-system"


@cache
def _names_default_system(module: str) -> bool:
    path = REPO / module
    return path.suffix == ".py" and "default_system" in path.read_text(encoding="utf-8")


def unit_of(nodeid: str) -> str:
    """The work unit of a test, from its node id (``path::name[params]``)."""
    module = nodeid.split("::", 1)[0]
    if module.startswith(LOAD_SENSITIVE):
        return LOAD_SENSITIVE_UNIT
    if module.startswith("tests/e2e/test_") and _names_default_system(module):
        return DEFAULT_SYSTEM_UNIT
    return module


class UnitScheduling(LoadScopeScheduling):
    """loadscope's scheduler with the units above, handed out in collection order (which
    `first_the_load_sensitive` begins with the load-sensitive unit), and nothing else
    handed out while the load-sensitive unit runs: its tests see the machine as a run on
    one worker does.

    The node that runs it is given its next unit before it ends (an xdist worker keeps its
    last test back until more work or shutdown arrives), which runs after it on that node.
    """

    def __init__(self, config: pytest.Config, log: Producer | None = None) -> None:
        super().__init__(config, log)
        config.option.loadscopereorder = False  # the order is the one given by the workers

    def _split_scope(self, nodeid: str) -> str:
        return unit_of(nodeid)

    def _load_sensitive_node(self) -> WorkerController | None:
        """The node running the load-sensitive unit, while it has tests left."""
        for node, units in self.assigned_work.items():
            unit = units.get(LOAD_SENSITIVE_UNIT)
            if unit is not None and not all(unit.values()):
                return node
        return None

    def _assign_work_unit(self, node: WorkerController) -> None:
        running = self._load_sensitive_node()
        if running is not None and running is not node:
            return  # the others wait until it has finished; mark_test_complete wakes them
        super()._assign_work_unit(node)

    def mark_test_complete(
        self, node: WorkerController, item_index: int, duration: float = 0
    ) -> None:
        super().mark_test_complete(node, item_index, duration)
        if self._load_sensitive_node() is None:
            for other in list(self.assigned_work):
                if other is not node:
                    self._reschedule(other)


def first_the_load_sensitive(items: list[pytest.Item]) -> None:
    """Move the load-sensitive unit's tests to the front, keeping every other order (each
    worker collects the same, so each sorts the same)."""
    items.sort(key=lambda item: unit_of(item.nodeid) != LOAD_SENSITIVE_UNIT)
