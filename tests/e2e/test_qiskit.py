"""`qmill.qiskit` against the real system: Qiskit's own reference primitives are the oracle.

One system serves the module, with API keys on (so every primitive also proves it sends
its key). Every HTTP response is checked against openapi.json (conftest.py); the
primitives and backends are made inside each test so their HTTP clients get that check.

Sampled distributions are compared with the reference's by total variation distance
against a bound derived from the shot counts (`tvd_bound`); exact expectation values to
1e-6. Seeds are fixed, so a run is repeatable, and the bound is what keeps the seeds
honest: a tolerance tuned to a seed would not be one.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pytest
from qiskit import ClassicalRegister, QuantumCircuit, QuantumRegister, transpile
from qiskit.circuit import Gate, Parameter
from qiskit.circuit.library import QFTGate, n_local, qaoa_ansatz
from qiskit.primitives import (
    BackendEstimatorV2,
    BackendSamplerV2,
    StatevectorEstimator,
    StatevectorSampler,
)
from qiskit.providers import JobStatus
from qiskit.quantum_info import SparsePauliOp
from scipy.optimize import minimize

from qmill.client import InvalidCircuitError, TaskCancelledError
from qmill.qiskit import (
    EstimatorV2,
    QmillBackend,
    SamplerV2,
    UnknownOptionError,
    UnsupportedCircuitError,
)
from qmill.server.auth import hash_key
from tests.e2e.system import System, running_system

pytestmark = pytest.mark.e2e

KEY = "qm_qiskit-e2e-key-0001"
# The reduced two-qubit H2 Hamiltonian (STO-3G, bond length 0.735 A).
H2 = SparsePauliOp.from_list(
    [
        ("II", -1.052373245772859),
        ("IZ", 0.39793742484318045),
        ("ZI", -0.39793742484318045),
        ("ZZ", -0.01128010425623538),
        ("XX", 0.18093119978423156),
    ]
)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(
        tmp_path_factory.mktemp("qiskit"),
        QMILL_AUTH__ENABLED="true",
        QMILL_AUTH__API_KEY_HASHES=json.dumps([hash_key(KEY)]),
    ) as running:
        yield running


@pytest.fixture
def backend(system: System) -> Iterator[QmillBackend]:
    """Made per test, after the OpenAPI check hooked httpx, so its answers are checked."""
    with QmillBackend(system.url, api_key=KEY) as made:
        yield made


@pytest.fixture
def sampler(system: System) -> Iterator[SamplerV2]:
    with SamplerV2(system.url, api_key=KEY, options={"seed_simulator": 21}) as made:
        yield made


# --- statistics ----------------------------------------------------------------------------


def tvd(p: Mapping[str, int], q: Mapping[str, int]) -> float:
    """Total variation distance between two empirical distributions (counts)."""
    n_p, n_q = sum(p.values()), sum(q.values())
    return 0.5 * sum(abs(p.get(k, 0) / n_p - q.get(k, 0) / n_q) for k in set(p) | set(q))


def tvd_bound(outcomes: int, shots_p: int, shots_q: int, failure: float = 1e-6) -> float:
    """A bound on the TVD between two independent samples of one distribution over
    ``outcomes`` values, exceeded with probability below ``failure``.

    Mean: E|p̂_i - p_i| <= sqrt(p_i / n), so by Cauchy-Schwarz E TVD(p̂, p) <=
    sqrt(K / n) / 2 for each sample. Spread: one shot changed moves the TVD by at most
    1/n of its sample, so McDiarmid gives P(TVD > mean + t) <= exp(-2 t^2 / (1/n_p + 1/n_q)).
    """
    mean = 0.5 * math.sqrt(outcomes / shots_p) + 0.5 * math.sqrt(outcomes / shots_q)
    spread = math.sqrt(math.log(1 / failure) * (1 / shots_p + 1 / shots_q) / 2)
    return mean + spread


def assert_same_distributions(ours: Any, reference: Any) -> float:
    """Every PUB: same shape and registers; every binding's joint outcome distribution
    (all registers together, so cross-register correlation counts) within `tvd_bound`.
    Returns the largest TVD seen over the bound (for the report)."""
    worst = 0.0
    for mine, ref in zip(ours, reference, strict=True):
        assert mine.data.shape == ref.data.shape
        assert sorted(mine.data.keys()) == sorted(ref.data.keys())
        for name in ref.data:
            assert mine.data[name].shape == ref.data[name].shape
            assert mine.data[name].num_bits == ref.data[name].num_bits
        joined, joined_ref = mine.join_data(), ref.join_data()
        for index in np.ndindex(*ref.data.shape):
            p, q = joined.get_counts(index), joined_ref.get_counts(index)
            bound = tvd_bound(2**joined.num_bits, joined.num_shots, joined_ref.num_shots)
            distance = tvd(p, q)
            assert distance < bound, (index, p, q)
            worst = max(worst, distance / bound)
    return worst


# --- circuits ------------------------------------------------------------------------------


def two_qubit_sweep() -> QuantumCircuit:
    qc = QuantumCircuit(2)
    qc.ry(Parameter("a"), 0)
    qc.rx(Parameter("b"), 1)
    qc.cx(0, 1)
    qc.rz(Parameter("c"), 1)
    qc.h(1)
    return qc


def three_qubit_two_registers() -> QuantumCircuit:
    """Registers ``x`` (1 bit) and ``y`` (2 bits) whose outcomes are correlated. The
    swept ``cry`` is a gate qiskit-aer 0.18 does not bind (the worker lowers it): this
    circuit is how that wrong answer was found."""
    qc = QuantumCircuit(
        QuantumRegister(3, "q"), ClassicalRegister(1, "x"), ClassicalRegister(2, "y")
    )
    theta, phi = Parameter("θ"), Parameter("φ")
    qc.ry(theta, 0)
    qc.cx(0, 1)
    qc.cry(phi, 1, 2)
    qc.h(2)
    qc.measure(0, 0)
    qc.measure([1, 2], [1, 2])
    return qc


def ghz_two_registers() -> QuantumCircuit:
    qc = QuantumCircuit(
        QuantumRegister(3, "q"), ClassicalRegister(2, "lo"), ClassicalRegister(1, "hi")
    )
    qc.h(0)
    qc.cx(0, 1)
    qc.cx(1, 2)
    qc.measure([0, 1, 2], [0, 1, 2])
    return qc


def sampler_pubs() -> list[tuple[Any, ...]]:
    rng = np.random.default_rng(5)
    measured = two_qubit_sweep()
    measured.measure_all()
    return [
        (measured, rng.uniform(0, np.pi, (4, 3))),  # 1-D sweep, 4 bindings
        (three_qubit_two_registers(), rng.uniform(0, np.pi, (2, 3, 2))),  # 2-D sweep
        (ghz_two_registers(),),
    ]


# --- 1. agreement with the reference primitives ---------------------------------------------


def test_sampler_agrees_with_the_statevector_sampler(system: System) -> None:
    pubs = sampler_pubs()
    with SamplerV2(system.url, api_key=KEY, options={"seed_simulator": 11}) as sampler:
        ours = sampler.run(pubs, shots=4000).result()
    reference = StatevectorSampler(seed=12).run(pubs, shots=4000).result()
    worst = assert_same_distributions(ours, reference)
    print(f"SamplerV2 vs StatevectorSampler: largest TVD {worst:.2f} of its bound")
    assert [pub.metadata["shots"] for pub in ours] == [4000, 4000, 4000]
    # Per-shot correlation: in the GHZ PUB, every shot's registers agree.
    ghz = ours[2].data
    pairs = zip(ghz.lo.array[:, 0].tolist(), ghz.hi.array[:, 0].tolist(), strict=True)
    assert set(pairs) <= {(0, 0), (3, 1)}


def estimator_pubs() -> list[tuple[Any, ...]]:
    rng = np.random.default_rng(6)
    observables = [
        [H2],
        [SparsePauliOp("ZZ")],
        [SparsePauliOp.from_list([("XI", 0.3), ("IY", -0.7), ("YX", 0.25)])],
    ]
    three = three_qubit_two_registers().remove_final_measurements(inplace=False)
    return [
        (two_qubit_sweep(), observables, rng.uniform(0, np.pi, (4, 3))),  # (3,1) x (4,)
        (three, "XYZ", rng.uniform(0, np.pi, (2, 3, 2))),  # 2-D sweep, one observable
        (ghz_two_registers().remove_final_measurements(inplace=False), ["ZZZ", "XXX", "IZI"]),
    ]


def test_estimator_agrees_exactly_with_the_statevector_estimator(system: System) -> None:
    pubs = estimator_pubs()
    with EstimatorV2(system.url, api_key=KEY) as estimator:
        ours = estimator.run(pubs).result()
    reference = StatevectorEstimator().run(pubs).result()
    assert [pub.data.evs.shape for pub in ours] == [(3, 4), (2, 3), (3,)]
    for mine, ref in zip(ours, reference, strict=True):
        assert mine.data.evs.shape == ref.data.evs.shape == mine.data.stds.shape
        np.testing.assert_allclose(mine.data.evs, ref.data.evs, rtol=0, atol=1e-6)
        assert np.all(mine.data.stds == 0)
        assert mine.metadata["evs_method"] == "exact"
    gap = max(np.max(np.abs(m.data.evs - r.data.evs)) for m, r in zip(ours, reference, strict=True))
    print(f"EstimatorV2 vs StatevectorEstimator: largest |evs difference| {gap:.1e}")


def test_estimator_precision_is_normal_noise_of_that_width(system: System) -> None:
    pubs = estimator_pubs()[:1]
    with EstimatorV2(system.url, api_key=KEY, options={"seed_simulator": 3}) as estimator:
        ours = estimator.run(pubs, precision=0.01).result()[0]
    exact = StatevectorEstimator().run(pubs).result()[0].data.evs
    assert np.all(ours.data.stds == 0.01)
    assert ours.metadata["target_precision"] == 0.01
    # 12 draws of N(0, 0.01): all within 5 sigma (P(miss) < 1e-5), and not all exact.
    assert np.max(np.abs(ours.data.evs - exact)) < 0.05
    assert np.max(np.abs(ours.data.evs - exact)) > 1e-6


def test_primitives_read_the_url_and_key_from_the_environment(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QMILL_URL", system.url)
    monkeypatch.setenv("QMILL_API_KEY", KEY)
    bell = ghz_two_registers()
    with SamplerV2() as sampler:
        job = sampler.run([bell], shots=64)
        result = job.result()
        assert job.status() is JobStatus.DONE and job.done() and job.in_final_state()
        assert not job.cancelled() and not job.running() and not job.cancel()
        assert job.job_id() == result.metadata["batch_id"]
    assert result[0].data.lo.num_shots == 64


# --- 2. VQE ---------------------------------------------------------------------------------


def test_vqe_reaches_the_h2_ground_energy(system: System) -> None:
    exact = float(np.linalg.eigvalsh(H2.to_matrix())[0])
    ansatz = n_local(2, "ry", "cx", reps=1)  # 4 parameters, real amplitudes
    evaluations = 0

    with EstimatorV2(system.url, api_key=KEY) as estimator:

        def energy(x: np.ndarray) -> float:
            nonlocal evaluations
            evaluations += 1
            return float(estimator.run([(ansatz, H2, x)]).result()[0].data.evs)

        found = minimize(energy, np.zeros(4), method="COBYLA", options={"rhobeg": 0.5, "tol": 1e-3})
    print(f"VQE: {found.fun:.9f} Ha vs exact {exact:.9f} after {evaluations} evaluations")
    assert abs(found.fun - exact) < 1.6e-3
    assert evaluations < 100


# --- 3. QAOA --------------------------------------------------------------------------------


def test_qaoa_maxcut_finds_an_optimal_cut(sampler: SamplerV2) -> None:
    nodes = 5
    edges = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0), (0, 2)]

    def cut(bits: str) -> int:
        return sum(bits[nodes - 1 - i] != bits[nodes - 1 - j] for i, j in edges)

    outcomes = ["".join(b) for b in itertools.product("01", repeat=nodes)]
    best = max(cut(bits) for bits in outcomes)
    optimal = {bits for bits in outcomes if cut(bits) == best}
    cost = SparsePauliOp.from_sparse_list([("ZZ", [i, j], 0.5) for i, j in edges], nodes)

    def mean_cut(counts: Mapping[str, int]) -> float:
        return sum(cut(bits) * n for bits, n in counts.items()) / sum(counts.values())

    # p = 1 on an 8 x 8 grid of (beta, gamma): one PUB, one task, 64 bindings.
    p1 = qaoa_ansatz(cost, reps=1)
    p1.measure_all()
    grid = np.stack(
        np.meshgrid(np.linspace(0, np.pi / 2, 8), np.linspace(0, np.pi, 8), indexing="ij"),
        axis=-1,
    )  # parameters: beta[0], gamma[0]
    sweep = sampler.run([(p1, grid)], shots=256).result()[0].data.meas
    means = np.array([mean_cut(sweep.get_counts(i)) for i in np.ndindex(8, 8)]).reshape(8, 8)
    beta, gamma = grid[np.unravel_index(np.argmax(means), means.shape)]

    # p = 2 from there, with COBYLA on the sampled mean cut.
    p2 = qaoa_ansatz(cost, reps=2)  # parameters: beta[0], beta[1], gamma[0], gamma[1]
    p2.measure_all()

    def negative_cut(x: np.ndarray) -> float:
        counts = sampler.run([(p2, x)], shots=1000).result()[0].data.meas.get_counts()
        return -mean_cut(counts)

    found = minimize(
        negative_cut,
        [beta, beta, gamma, gamma],
        method="COBYLA",
        options={"rhobeg": 0.2, "maxiter": 40},
    )
    counts = sampler.run([(p2, found.x)], shots=4000).result()[0].data.meas.get_counts()
    top, frequency = Counter(counts).most_common(1)[0]
    print(
        f"QAOA: grid mean cut {means.max():.3f}, p=2 mean cut {-found.fun:.3f} after "
        f"{found.nfev} evaluations; top {top} ({frequency}/4000), max cut {best}"
    )
    assert top in optimal


# --- 4. BackendV2 ---------------------------------------------------------------------------


def test_backend_describes_the_server(backend: QmillBackend) -> None:
    described = backend.description_json
    assert backend.max_circuits == described["max_batch_tasks"]
    assert {"h", "cx", "rz", "measure", "if_else"} <= set(backend.target.operation_names)
    assert backend.num_qubits >= described["methods"]["statevector"]["max_qubits"]
    qc = QuantumCircuit(3, 3)
    qc.append(QFTGate(3), [0, 1, 2])
    qc.measure([0, 1, 2], [0, 1, 2])
    lowered = transpile(qc, backend, seed_transpiler=1)
    assert lowered.num_qubits == 3
    assert set(lowered.count_ops()) <= set(backend.target.operation_names)


def test_backend_sampler_agrees_with_the_reference(system: System) -> None:
    pubs = sampler_pubs()
    with QmillBackend(system.url, api_key=KEY) as backend:
        sampler = BackendSamplerV2(backend=backend, options={"seed_simulator": 13})
        ours = sampler.run(pubs, shots=4000).result()
    reference = StatevectorSampler(seed=14).run(pubs, shots=4000).result()
    worst = assert_same_distributions(ours, reference)
    print(
        f"BackendSamplerV2(QmillBackend) vs StatevectorSampler: largest TVD {worst:.2f} "
        "of its bound"
    )


def test_backend_estimator_agrees_within_its_shot_noise(system: System) -> None:
    pubs = estimator_pubs()
    with QmillBackend(system.url, api_key=KEY) as backend:
        estimator = BackendEstimatorV2(backend=backend, options={"seed_simulator": 15})
        ours = estimator.run(pubs, precision=0.02).result()  # 2500 shots per basis
    reference = StatevectorEstimator().run(pubs).result()
    worst = 0.0
    for mine, ref in zip(ours, reference, strict=True):
        assert mine.data.evs.shape == ref.data.evs.shape
        # stds is BackendEstimatorV2's own (conservative) standard error.
        deviation = np.abs(mine.data.evs - ref.data.evs)
        assert np.all(deviation <= 5 * mine.data.stds + 1e-9)
        worst = max(worst, float(np.max(deviation / np.maximum(mine.data.stds, 1e-12))))
    print(f"BackendEstimatorV2(QmillBackend) vs StatevectorEstimator: worst {worst:.2f} stds")


def test_backend_run_gives_counts_and_memory(backend: QmillBackend) -> None:
    first = ghz_two_registers()
    dynamic = QuantumCircuit(2, 2, name="feed-forward")
    dynamic.x(0)
    dynamic.measure(0, 0)
    with dynamic.if_test((dynamic.clbits[0], 1)):
        dynamic.x(1)
    dynamic.measure(1, 1)
    job = backend.run([first, dynamic], shots=100, memory=True, seed_simulator=5)
    result = job.result()
    assert job.status() is JobStatus.DONE and len(job.task_ids) == 2
    counts, memory = result.get_counts(0), result.get_memory(0)
    assert set(counts) == {"0 00", "1 11"} and sum(counts.values()) == 100
    assert Counter(memory) == counts and len(memory) == 100
    assert result.get_counts("feed-forward") == {"11": 100}
    assert result.get_memory(1) == ["11"] * 100


def test_backend_run_passes_every_option_or_refuses_it(backend: QmillBackend) -> None:
    bell = QuantumCircuit(2, 2)
    bell.h(0)
    bell.cx(0, 1)
    bell.measure([0, 1], [0, 1])
    noisy = backend.run(
        bell, shots=2000, method="density_matrix", noise={"readout": 0.2}, seed_simulator=1
    ).result()
    assert noisy.results[0].metadata["method"] == "density_matrix"
    assert {"01", "10"} <= set(noisy.get_counts())  # readout errors break the correlation
    with pytest.raises(UnknownOptionError, match="meas_level"):
        backend.run(bell, meas_level=1)
    with pytest.raises(ValueError, match="shots"):
        backend.run(bell, shots=0)


def test_cancel_a_pending_job(backend: QmillBackend) -> None:
    from qiskit.circuit.random import random_circuit

    # 23 qubits, 60 layers: minutes each; six of them outnumber the workers' slots.
    slow = random_circuit(23, 60, measure=True, seed=11)
    job = backend.run([slow] * 6, shots=10)
    assert job.status() in (JobStatus.QUEUED, JobStatus.RUNNING)
    assert job.cancel() is True
    assert job.status() is JobStatus.CANCELLED
    with pytest.raises(TaskCancelledError):
        job.result(timeout=30)


# --- 5. what cannot be sent -----------------------------------------------------------------


def test_circuits_openqasm_cannot_carry_are_refused_at_the_client(system: System) -> None:
    opaque = QuantumCircuit(1, 1)
    opaque.append(Gate("foo", 1, []), [0])
    opaque.measure(0, 0)
    with SamplerV2(system.url, api_key=KEY) as sampler, QmillBackend(system.url) as backend:
        with pytest.raises(UnsupportedCircuitError, match="'foo' that has no definition"):
            sampler.run([opaque])
        with pytest.raises(UnsupportedCircuitError, match="'foo' that has no definition"):
            backend.run(opaque)


def test_what_the_server_cannot_read_is_its_400(system: System) -> None:
    switch = QuantumCircuit(1, 1)
    switch.h(0)
    switch.measure(0, 0)
    with switch.switch(switch.cregs[0]) as case, case(0):
        switch.x(0)
    switch.measure(0, 0)
    with (
        SamplerV2(system.url, api_key=KEY) as sampler,
        pytest.raises(InvalidCircuitError) as refused,
    ):
        sampler.run([switch])
    assert refused.value.line is not None
