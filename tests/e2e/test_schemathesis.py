"""schemathesis against the running system, from the document it serves.

Every check (``--checks all``: server errors, status codes, content types, headers,
response schemas, negative data rejected, positive data accepted, missing headers,
unsupported methods, Allow, auth enforcement, resource availability), with positive and
negative data, three times: auth on with a valid key, in every phase (examples,
coverage, fuzzing, stateful); auth off, in the examples and coverage phases; auth on
with no key (schemathesis then generates keys of its own, so every protected operation
must answer 401). Configuration and the
two exceptions (with reasons) are in schemathesis.toml beside this file.

The number of examples per operation bounds the run time; each run prints its numbers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from qmill.server import openapi
from qmill.server.auth import hash_key
from tests.e2e.system import System, running_system

pytestmark = pytest.mark.e2e

CONFIG = Path(__file__).with_name("schemathesis.toml")
KEY = "qm_schemathesis-key-0001"
SEED = 20261125
# Per operation and phase: ~20 s per run here (the coverage phase adds its own cases);
# raise it locally for a deeper search.
MAX_EXAMPLES = 25
# Without a key every protected operation answers 401 whatever the input. The examples
# and coverage phases (every operation, its boundary and negative values) prove that;
# fuzzing and stateful runs only repeat the same 401 and took ~20 of this run's ~27 s.
NO_KEY_EXAMPLES = 8
NO_KEY_PHASES = "examples,coverage"
# Auth off runs the same handlers as auth on with a key, which gets every phase: here the
# examples and coverage phases (every operation, its boundary and negative values) prove
# the open configuration, and fuzzing and stateful runs (~30 of this run's ~40 s with 14
# operations) would repeat the keyed run's requests without the header.
AUTH_OFF_PHASES = "examples,coverage"


@pytest.fixture
def open_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """Auth off, as `make run`; long polls capped at 2 s so fuzzed ``?wait=`` stays cheap."""
    with running_system(
        tmp_path_factory.mktemp("schemathesis-open"),
        QMILL_SERVER__MAX_WAIT_SECONDS="2",
        QMILL_WORKER__PROCESSES="1",
    ) as running:
        yield running


@pytest.fixture(scope="module")
def auth_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(
        tmp_path_factory.mktemp("schemathesis-auth"),
        QMILL_AUTH__ENABLED="true",
        QMILL_AUTH__API_KEY_HASHES=json.dumps([hash_key(KEY)]),
        QMILL_AUTH__RATE_PER_SECOND="0",  # rate limiting has its own test (test_auth)
        QMILL_SERVER__MAX_WAIT_SECONDS="2",
        QMILL_WORKER__PROCESSES="1",
    ) as running:
        yield running


def schemathesis(
    system: System, tmp: Path, label: str, *args: str, examples: int = MAX_EXAMPLES
) -> dict[str, object]:
    """Run ``st run`` with every check; return its JSON report, after printing the numbers."""
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st is not None
    report = tmp / "schemathesis.json"
    command = [
        st,
        "--config-file",
        str(CONFIG),
        "run",
        f"{system.url}/openapi.json",
        "--url",
        system.url,
        "--checks",
        "all",
        # Cancel keeps a task readable as `cancelled`; see schemathesis.toml.
        "--exclude-checks",
        "use_after_free",
        "--mode",
        "all",
        "--max-examples",
        str(examples),
        "--seed",
        str(SEED),
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--wait-for-schema",
        "30",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        *args,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    result: dict[str, object] = json.loads(report.read_text()) if report.exists() else {}
    operations = result.get("operations", {})
    cases = result.get("test_cases", {})
    print(
        f"\nschemathesis, {label}: "
        f"operations {operations}, test cases {cases}, failures {result.get('failures')}, "
        f"errors {result.get('errors')}, {result.get('running_time', 0):.1f} s"
    )
    assert done.returncode == 0, done.stdout[-20000:] + done.stderr[-5000:]
    assert result["failures"] == [] and result["errors"] == []
    documented = sum(
        1 for item in openapi.document()["paths"].values() for verb in item if verb != "parameters"
    )
    assert isinstance(operations, dict)
    # Every operation it selected was tested (it selects all but, at times, the page).
    assert operations["tested"] == operations["total"] >= documented - 1
    return result


def test_schemathesis_auth_off(open_system: System, tmp_path: Path) -> None:
    schemathesis(open_system, tmp_path, "auth off", "--phases", AUTH_OFF_PHASES)


def test_schemathesis_auth_on_with_a_key(auth_system: System, tmp_path: Path) -> None:
    schemathesis(auth_system, tmp_path, "auth on, valid key", "-H", f"Authorization: Bearer {KEY}")


def test_schemathesis_auth_on_without_a_key(auth_system: System, tmp_path: Path) -> None:
    result = schemathesis(
        auth_system,
        tmp_path,
        "auth on, no key",
        "--phases",
        NO_KEY_PHASES,
        examples=NO_KEY_EXAMPLES,
    )
    warnings = result["warnings"]
    assert isinstance(warnings, dict)
    # Every operation that needs a key answered only 401s to every request schemathesis
    # made without one (it also sends keys it generates itself); it warns of exactly that.
    assert set(warnings["missing_auth"]) == {
        "POST /tasks",
        "GET /tasks/{task_id}",
        "DELETE /tasks/{task_id}",
        "POST /batches",
        "GET /batches/{batch_id}",
        "DELETE /batches/{batch_id}",
        "GET /tasks/{task_id}/histogram.svg",
        "GET /tasks/{task_id}/diagram.txt",
        "GET /tasks",
        "GET /events",
    }
