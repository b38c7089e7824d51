"""Which tasks the worker runs together, and at which seeds (`qmill_worker.batching`),
and the child's cache of lowered programs (`qmill_worker.circuits`)."""

from __future__ import annotations

import copy

import pytest

from qmill.server.workload import FloatPrecision, Method, Noise, Plan
from qmill_worker import batching
from qmill_worker.batching import AER_SEED_STRIDE, Run, chunks, run_key, seed_runs, work
from qmill_worker.circuits import CircuitCache
from tests.conftest import BELL


def seeds_of(runs: list[Run], seeds: list[int | None]) -> dict[int, int]:
    """The seed Aer gives each seeded task: experiment i of a call seeded b gets b + 2113 i."""
    given: dict[int, int] = {}
    for run in runs:
        for position, index in enumerate(run.members):
            if run.seed is not None:
                given[index] = run.seed + AER_SEED_STRIDE * position
    return {i: given[i] for i, s in enumerate(seeds) if s is not None}


@pytest.mark.parametrize(
    "seeds",
    [
        [None] * 7,
        [5, None, None, 5 + 2 * AER_SEED_STRIDE, None],
        [100, 101, 102, None, None, None],  # a batch seed's consecutive seeds
        [7, 7, None],  # the same seed twice
        [3 + AER_SEED_STRIDE, 3, None, None],
        [2**63 - 1, None, None],  # no filled position past the largest seed
        [0, 3 * AER_SEED_STRIDE],  # a gap no unseeded task fills
    ],
)
def test_every_task_runs_once_and_every_seeded_task_at_its_own_seed(
    seeds: list[int | None],
) -> None:
    runs = seed_runs(seeds, max_size=4)
    members = sorted(i for run in runs for i in run.members)
    assert members == list(range(len(seeds)))
    assert all(len(run.members) <= 4 for run in runs)
    assert seeds_of(runs, seeds) == {i: s for i, s in enumerate(seeds) if s is not None}
    for run in runs:
        if run.seed is not None:
            assert run.seed + AER_SEED_STRIDE * (len(run.members) - 1) <= batching.MAX_SEED


def test_unseeded_tasks_share_a_call_and_fill_a_seeded_ones() -> None:
    assert seed_runs([None, None, None], 8) == [Run((0, 1, 2), None)]
    assert seed_runs([None, 9, None], 8) == [Run((1, 0, 2), 9)]
    # Consecutive seeds cannot share a call (Aer's stride is 2113): one call each.
    assert len(seed_runs([1, 2, 3], 8)) == 3


def test_batches_are_bounded_in_tasks_and_in_work() -> None:
    assert chunks([1, 1, 1, 1, 1], max_tasks=2, max_work=100) == [[0, 1], [2, 3], [4]]
    assert chunks([60, 60, 30, 200, 1], max_tasks=10, max_work=100) == [[0], [1, 2], [3], [4]]
    assert work(BELL, 1000) == 1000 * BELL.count(";")


def test_only_small_plain_sampling_tasks_with_equal_run_options_share_a_key() -> None:
    plain = Plan(method=Method.STATEVECTOR, state_bytes=16 * 4)
    assert run_key(plain, 100, False) == run_key(plain, 100, False)
    assert run_key(plain, 100, False) != run_key(plain, 200, False)
    assert run_key(plain, 100, False) != run_key(plain, 100, True)
    single = Plan(method=Method.STATEVECTOR, precision=FloatPrecision.SINGLE, state_bytes=32)
    assert run_key(single, 100, False) != run_key(plain, 100, False)
    noisy = Plan(method=Method.STATEVECTOR, noise=Noise(depolarizing_1q=0.01), state_bytes=64)
    assert run_key(noisy, 100, False) not in (None, run_key(plain, 100, False))
    wide = Plan(method=Method.STATEVECTOR, state_bytes=16 * 2**14)
    assert run_key(wide, 100, False) is None
    clifford = Plan(method=Method.STABILIZER, state_bytes=1024 * 1024)
    assert run_key(clifford, 100, False) is not None
    assert run_key(Plan(method=Method.EXTENDED_STABILIZER), 100, False) is None


def test_the_cache_parses_once_and_is_bounded_in_entries_and_text() -> None:
    cache = CircuitCache(entries=2, text_chars=4 * len(BELL) + 8)
    first = cache.lowered(BELL, "statevector", False, False)
    assert cache.lowered(BELL, "statevector", False, False) is first
    assert (cache.hits, cache.misses) == (1, 1)
    assert cache.lowered(BELL, "stabilizer", False, False) is not first  # its own lowering
    other = BELL.replace("h q[0];", "x q[0]; h q[0];")
    cache.lowered(other, "statevector", False, False)
    assert len(cache) == 2  # the least recently used went
    cache.lowered(BELL + " " * (4 * len(BELL)), "statevector", False, False)
    assert len(cache) == 2 and cache.chars <= 4 * len(BELL) + 8  # too long to keep


def test_a_run_leaves_a_cached_circuit_as_it_was() -> None:
    from qmill_worker.simulator import backend

    circuit = CircuitCache().lowered(BELL, "statevector", False, False).circuit
    before = copy.deepcopy(circuit)
    backend().run([circuit, circuit], shots=10, method="statevector", memory=True).result()
    assert circuit == before and circuit.metadata == before.metadata
    assert circuit.name == before.name
