"""One rule each: limits from the settings (their ceilings are the fields' bounds), one
pre-scan, an importer chosen from it, and batch errors that carry the task's index."""

from __future__ import annotations

import asyncio
import json

import pytest
from pydantic import ValidationError

from qmill.server.config import LimitsSettings, Settings
from qmill.server.errors import InvalidCircuit, LimitExceeded, RequestError
from qmill.server.http import error_response
from qmill.server.models import SubmitRequest
from qmill.server.qasm import Importer, Limits, choose_importer, parse
from qmill.server.qasm.prescan import scan
from qmill.server.tasks import validate
from tests.conftest import BELL

HEAD = 'OPENQASM 3.0; include "stdgates.inc"; qubit[2] q; bit[2] c; '


def test_the_ceilings_are_the_bounds_of_the_settings() -> None:
    ceilings = Limits.ceilings()
    assert (ceilings.nesting, ceilings.statement_chars) == (64, 8192)
    assert ceilings.budget is None and not ceilings.admission
    for key, value in (("max_nesting", 65), ("max_statement_chars", 8193)):
        with pytest.raises(ValidationError):
            LimitsSettings.model_validate({key: value})


def test_nesting_is_measured_once_on_what_the_parsers_see() -> None:
    deep = "(" * 65 + "0" + ")" * 65
    # Stray closing brackets cannot hide depth.
    assert scan(HEAD + ")" * 100 + "; rz(" + deep + ") q[0];").nesting == 66
    # Brackets inside comments are not nesting (HEAD's own "[2]" is 1 deep).
    assert scan(HEAD + "// " + "(" * 100 + "\nc = measure q;").nesting == 1


def test_over_a_bound_is_a_limit_at_admission_and_invalid_afterwards() -> None:
    program = HEAD + "rz(" + "(" * 65 + "0" + ")" * 65 + ") q[0]; c = measure q;"
    with pytest.raises(LimitExceeded) as limit:
        parse(program, Limits.for_request(Settings()))
    assert limit.value.limit == "nesting depth" and limit.value.allowed == 64
    with pytest.raises(InvalidCircuit, match="more than 64 open brackets"):
        parse(program)


@pytest.mark.parametrize(
    ("program", "admission", "importer"),
    [
        (BELL, True, Importer.FAST),
        (BELL, False, Importer.FAST),
        (HEAD + "ctrl @ x q[0], q[1]; c = measure q;", True, Importer.REFERENCE),
        # Modifiers are bounded in the reference importer only (the fast one refuses
        # them all in qiskit 2.6, and would build them unbounded if it did not).
        (HEAD + "ctrl @ x q[0], q[1]; c = measure q;", False, Importer.REFERENCE),
        (HEAD + "rz(" + "+".join(["1"] * 3000) + ") q[0];", True, Importer.REFERENCE),
        ('OPENQASM 2.0; include "qelib1.inc"; qreg q[1];', True, Importer.QASM2),
    ],
)
def test_the_importer_is_chosen_from_the_prescan(
    program: str, admission: bool, importer: Importer
) -> None:
    limits = Limits.for_request(Settings()) if admission else Limits.ceilings()
    assert choose_importer(scan(program), limits) is importer


def test_the_same_qubit_twice_is_refused_whichever_importer_runs() -> None:
    with pytest.raises(InvalidCircuit, match="same qubit more than once"):
        parse(HEAD + "cx q[0], q[0]; c = measure q;")


def test_a_batch_error_carries_the_index_of_its_task() -> None:
    settings = Settings.model_validate({"limits": {"max_gates": 4}})
    requests = [
        SubmitRequest(quantum_circuit=BELL),
        SubmitRequest(quantum_circuit=HEAD + "h q; h q; c = measure q;"),
    ]
    with pytest.raises(RequestError) as info:
        asyncio.run(validate(requests, settings, batch=True))
    exc = info.value
    assert isinstance(exc, LimitExceeded) and exc.index == 1 and exc.limit == "gates"
    assert exc.message.startswith("tasks[1]: gates is")
    body = json.loads(error_response(exc).body)
    assert body == {"detail": exc.message, "limit": "gates", "allowed": 4, "index": 1}


def test_a_batch_parse_error_keeps_its_documented_lead() -> None:
    requests = [SubmitRequest(quantum_circuit=BELL), SubmitRequest(quantum_circuit="x;")]
    with pytest.raises(InvalidCircuit) as info:
        asyncio.run(validate(requests, Settings(), batch=True))
    assert info.value.index == 1
    assert info.value.message.startswith("invalid OpenQASM: tasks[1]: line 1, column 1: ")
