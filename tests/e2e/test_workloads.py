"""Sweeps, expectation values, methods and noise through the running system, over HTTP
and through the Python client: what a user of `POST /tasks` sees."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter
from qiskit.quantum_info import SparsePauliOp, Statevector

from qmill import Client
from qmill.client import LimitExceededError
from qmill.server.config import Settings
from qmill.server.models import SubmitRequest
from tests.conftest import BELL
from tests.e2e.system import System
from tests.e2e.test_client_cli import qmill

pytestmark = pytest.mark.e2e

HEAD = 'OPENQASM 3.0; include "stdgates.inc"; '
SWEEP = (
    HEAD
    + "input float[64] theta; qubit[2] q; bit[2] c; ry(theta) q[0]; cx q[0], q[1]; c = measure q;"
)


@pytest.fixture(scope="module")
def system(default_system: System) -> System:
    return default_system


@pytest.fixture
def http(system: System) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=system.url, timeout=30) as client:
        yield client


def done(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    created = http.post("/tasks", json=body)
    assert created.status_code == 201, created.text
    task: dict[str, Any] = http.get(
        f"/tasks/{created.json()['task_id']}", params={"wait": 30}
    ).json()
    assert task["status"] == "completed", task
    return task


def test_unknown_fields_are_refused_and_the_seed_fields_still_work(http: httpx.Client) -> None:
    refused = http.post(
        "/tasks", json={"quantum_circuit": BELL, "shots": 10, "methd": "density_matrix"}
    )
    assert refused.status_code == 422
    body = refused.json()
    assert body["detail"].startswith("unknown field 'methd'; accepted fields: quantum_circuit")
    assert body["allowed"] == SubmitRequest.fields()
    assert "noise" in body["allowed"]
    # The method is honoured, not dropped: the task says which one ran.
    task = done(http, {"quantum_circuit": BELL, "shots": 10, "method": "density_matrix"})
    assert task["method"] == "density_matrix"
    assert http.get("/tasks/" + task["id"], params={"verbose": 1}).status_code == 422


def test_backend_describes_the_limits_submit_enforces(http: httpx.Client) -> None:
    backend = http.get("/backend").json()
    dm = backend["methods"]["density_matrix"]["max_qubits"]
    assert backend["methods"]["statevector"]["max_qubits"] == Settings().statevector_qubit_limit
    assert backend["task_fields"][:2] == ["quantum_circuit", "shots"]
    assert {"h", "cx", "rz", "u"} <= set(backend["gates"])
    assert backend["noise"]["additionalProperties"] is False
    n = dm + 1
    program = HEAD + f"qubit[{n}] q; bit[{n}] c; h q[0]; t q[0]; c = measure q;"
    over = http.post("/tasks", json={"quantum_circuit": program, "method": "density_matrix"})
    assert over.status_code == 422
    assert over.json()["limit"] == "qubits (density_matrix)" and over.json()["allowed"] == dm


def test_a_sweep_is_one_task_answered_per_binding(http: httpx.Client) -> None:
    thetas = [0.0, math.pi / 2, math.pi]
    task = done(
        http, {"quantum_circuit": SWEEP, "shots": 400, "seed": 1, "parameters": {"theta": thetas}}
    )
    assert task["shape"] == [3] and task["result"] is None
    first, middle, last = (r["counts"] for r in task["results"])
    assert first == {"00": 400} and last == {"11": 400}
    assert set(middle) == {"00", "11"} and 100 < middle["00"] < 300
    assert http.get(f"/tasks/{task['id']}/histogram.svg").status_code == 409


def test_expectation_values_through_the_client(system: System) -> None:
    theta = Parameter("theta")
    circuit = QuantumCircuit(2)
    circuit.ry(theta, 0)
    circuit.cx(0, 1)
    observable = SparsePauliOp.from_list([("ZZ", 0.5), ("XX", -1.0), ("IZ", 0.25)])
    values = np.linspace(0, math.pi, 5)
    with Client(system.url) as qm:
        task = qm.run(circuit, parameters={"theta": values}, observables=observable)
    assert task.evs_method == "exact" and task.shape == [5]
    for value, ev in zip(values, task.evs or [], strict=True):
        exact = Statevector(circuit.assign_parameters([value])).expectation_value(observable).real
        assert ev == pytest.approx(exact, abs=1e-9)


def test_a_noisy_bell_shows_the_error_outcomes(http: httpx.Client) -> None:
    noise = {"depolarizing_1q": 0.02, "depolarizing_2q": 0.1, "readout": 0.05}
    task = done(http, {"quantum_circuit": BELL, "shots": 4000, "seed": 7, "noise": noise})
    errors = task["result"].get("01", 0) + task["result"].get("10", 0)
    assert 0.08 * 4000 < errors < 0.25 * 4000  # ~14.6%: depolarizing plus two readouts
    assert task["noise"] == {**noise, "gates": {}}
    clean = done(http, {"quantum_circuit": BELL, "shots": 4000, "seed": 7})
    assert set(clean["result"]) == {"00", "11"}


def test_sixty_qubit_ghz_on_matrix_product_states(http: httpx.Client) -> None:
    n = 60
    body = " ".join(f"cx q[{i}], q[{i + 1}];" for i in range(n - 1))
    program = HEAD + f"qubit[{n}] q; bit[{n}] c; h q[0]; {body} c = measure q;"
    task = done(http, {"quantum_circuit": program, "shots": 1000, "method": "matrix_product_state"})
    assert task["method"] == "matrix_product_state"
    assert set(task["result"]) == {"0" * n, "1" * n}


def test_a_batch_carries_each_tasks_options(system: System) -> None:
    with Client(system.url) as qm:
        ids = qm.submit_batch(
            [SWEEP, SWEEP], shots=50, parameters={"theta": [0.0, math.pi]}, method="statevector"
        )
        tasks = [qm.result(task_id) for task_id in ids]
    for task in tasks:
        assert task.method == "statevector" and task.shape == [2]
        assert [r["counts"] for r in task.results or []] == [{"00": 50}, {"11": 50}]


def test_over_a_limit_the_client_raises_with_the_limit(system: System) -> None:
    with Client(system.url) as qm, pytest.raises(LimitExceededError) as info:
        qm.submit(SWEEP, parameters={"theta": [0.0] * 20_000})
    assert "bindings in a sweep" in str(info.value)


def test_the_cli_sends_any_task_field(system: System, tmp_path: Path) -> None:
    program = tmp_path / "ansatz.qasm"
    program.write_text(HEAD + "input float[64] theta; qubit[2] q; ry(theta) q[0]; cx q[0], q[1];")
    run = qmill(
        system,
        "submit",
        str(program),
        "--wait",
        "--method",
        "statevector",
        "--set",
        'parameters={"theta": [0, 3.141592653589793]}',
        "--set",
        'observables=[["ZZ", 1.0], ["IZ", 0.5]]',
        key=None,
    )
    assert run.code == 0, run
    assert "expectation values (shape [2], exact): [1.5" in run.out
    refused = qmill(system, "submit", str(program), "--set", "methd=statevector", key=None)
    assert refused.code != 0 and "unknown field 'methd'" in refused.err, refused
