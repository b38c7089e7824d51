"""Which registry a process counts in, decided when `qmill.server.metrics` is imported.

Each case imports it in a fresh interpreter (the decision is made once, at import, as in
gunicorn's arbiter), with the environment functions-framework would give it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict, mmap_key

from qmill.server import metrics

# Imports the module, counts one accepted task, prints what /metrics would answer.
_PROBE = """
import json, os
from qmill.server import metrics
metrics.TASKS_ACCEPTED.labels("submit").inc()
shared = metrics.SHARED_DIR
print(json.dumps({
    "shared": None if shared is None else str(shared),
    "files": sorted(os.listdir(shared)) if shared else [],
    "exposition": metrics.exposition().decode(),
}))
"""

_ACCEPTED = 'qmill_tasks_accepted_total{function="submit"}'


def _probe(tmp_path: Path, **env: str) -> dict[str, object]:
    base = {k: v for k, v in os.environ.items() if k not in ("WORKERS", metrics.MULTIPROC_DIR_ENV)}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**base, "TMPDIR": str(tmp_path), **env},
        capture_output=True,
        check=True,
        timeout=60,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


def _accepted(exposition: object) -> float:
    assert isinstance(exposition, str)
    lines = [line for line in exposition.splitlines() if line.startswith(_ACCEPTED + " ")]
    assert len(lines) == 1, exposition
    return float(lines[0].split()[-1])


def test_one_process_keeps_its_registry_in_memory(tmp_path: Path) -> None:
    seen = _probe(tmp_path, WORKERS="1")
    assert seen["shared"] is None and list(tmp_path.iterdir()) == []
    assert _accepted(seen["exposition"]) == 1.0
    assert "process_cpu_seconds_total" in str(seen["exposition"])  # as before


def test_several_get_a_directory_of_their_own_removed_at_exit(tmp_path: Path) -> None:
    seen = _probe(tmp_path, WORKERS="2")
    shared = Path(str(seen["shared"]))
    assert shared.parent == tmp_path and shared.name.startswith("qmill-metrics-")
    assert seen["files"] == [f"counter_{shared.name.removeprefix('qmill-metrics-')}.db"]
    assert _accepted(seen["exposition"]) == 1.0
    assert not shared.exists()  # the importing process (the arbiter) exited


def test_a_given_directory_is_emptied_of_an_earlier_runs_counts(tmp_path: Path) -> None:
    given = tmp_path / "metrics"
    given.mkdir()
    # What a process of an earlier run left: 7 accepted tasks, which must not be added.
    stale = MmapedDict(str(given / "counter_999999.db"))
    key = mmap_key(
        "qmill_tasks_accepted", "qmill_tasks_accepted_total", ["function"], ["submit"], "x"
    )
    stale.write_value(key, 7.0, 0.0)
    stale.close()
    (given / "README").write_text("not prometheus_client's")
    seen = _probe(tmp_path, **{metrics.MULTIPROC_DIR_ENV: str(given)})
    assert seen["shared"] == str(given)
    assert _accepted(seen["exposition"]) == 1.0
    assert sorted(p.name for p in given.iterdir())[0] == "README"  # only *.db files go
    assert given.exists()  # the operator's directory stays
