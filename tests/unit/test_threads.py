"""How many OpenMP threads a simulation gets: the cores shared among the running
simulations, and one for a circuit Aer would run on one thread anyway. Pure logic."""

from __future__ import annotations

import os

import pytest

from qmill.server.workload import Method, Plan, Sweep
from qmill.server.workload.spec import Noise
from qmill_worker.executors import aer_threads
from qmill_worker.simulator import PARALLEL_QUBITS, useful_threads

CORES = os.cpu_count() or 1


def test_configured_threads_are_kept_whatever_runs() -> None:
    assert aer_threads(3, 1) == 3
    assert aer_threads(3, 8) == 3


def test_shared_threads_follow_the_running_simulations() -> None:
    assert aer_threads(0, 1) == CORES  # alone: every core
    assert aer_threads(0, 2) == max(1, CORES // 2)
    assert aer_threads(0, 10 * CORES) == 1  # never zero
    assert aer_threads(0, 0) == CORES


def sweep(points: int) -> Sweep:
    return Sweep(names=["theta"], shape=[points], values=[[0.1] * points])


@pytest.mark.parametrize(
    ("qubits", "plan", "threads"),
    [
        (2, None, 1),  # a Bell circuit as the first API knew it
        (PARALLEL_QUBITS - 1, None, 1),
        (PARALLEL_QUBITS, None, 4),
        (2, Plan(), 1),
        (2, Plan(parameters=sweep(1)), 1),
        (2, Plan(parameters=sweep(2)), 4),  # Aer runs the points in parallel
        (2, Plan(noise=Noise(depolarizing_1q=0.01)), 4),  # and noisy shots
        (PARALLEL_QUBITS // 2, Plan(method=Method.DENSITY_MATRIX), 4),  # 4^n amplitudes
        (PARALLEL_QUBITS // 2 - 1, Plan(method=Method.DENSITY_MATRIX), 1),
        (PARALLEL_QUBITS, Plan(method=Method.MATRIX_PRODUCT_STATE), 4),
    ],
)
def test_small_circuits_get_one_thread(qubits: int, plan: Plan | None, threads: int) -> None:
    assert useful_threads(4, qubits, plan) == threads
    assert useful_threads(1, qubits, plan) == 1
