"""The client's own logic, the SVG histogram and the CLI's pure parts, without a server.

HTTP is answered by ``httpx.MockTransport`` handlers, so retries, error mapping and the
long-poll loop are exercised exactly as they run against a real server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from qmill import cli, client
from qmill.client import (
    AsyncClient,
    Client,
    RetryPolicy,
    parse_retry_after,
    to_qasm,
)
from qmill.pictures import histogram_svg
from tests.conftest import BELL

NOW = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
TASK_ID = "7496f621-a003-42ec-8a48-92412acb19b4"
FAST = RetryPolicy(retries=3, backoff=0.001, max_delay=5.0)
SVG = "{http://www.w3.org/2000/svg}"


def view(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": TASK_ID,
        "task_id": TASK_ID,
        "status": status,
        "shots": 1024,
        "result": {"00": 512, "11": 512} if status == "completed" else None,
        "error": None,
        "created_at": "2026-11-25T05:25:48.115036Z",
        "started_at": None,
        "completed_at": None,
        "attempts": 1,
        **extra,
    }


Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A mock server: answers from a list (the last repeats) and keeps every request.

    Without ``streams`` it is a server without event streams (``GET /events`` is a 404).
    """

    def __init__(
        self, *answers: httpx.Response | Handler | Exception, streams: bool = False
    ) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.streams = streams

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/events" and not self.streams:
            # A server without event streams: the client long-polls (the fallback).
            return answer(404, {"detail": "Not Found"})
        self.requests.append(request)
        reply = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(reply, Exception):
            raise reply
        if callable(reply):
            return reply(request)
        return reply

    def client(self, **kwargs: Any) -> Client:
        kwargs.setdefault("retry", FAST)
        return Client("http://qmill.test", transport=httpx.MockTransport(self), **kwargs)

    def async_client(self, **kwargs: Any) -> AsyncClient:
        kwargs.setdefault("retry", FAST)
        return AsyncClient("http://qmill.test", transport=httpx.MockTransport(self), **kwargs)


def answer(status: int, body: object = None, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


# --- Retry-After and backoff -------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("3", 3.0),
        ("0", 0.0),
        (" 1.5 ", 1.5),
        (format_datetime(NOW + timedelta(seconds=10), usegmt=True), 10.0),
        (format_datetime(NOW - timedelta(seconds=10), usegmt=True), 0.0),
        ("Wed, 25 Nov 2026 12:00:07 GMT", 7.0),
        ("-1", None),
        ("nan", None),
        ("inf", None),
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


def test_retry_after_is_honoured_never_shortened() -> None:
    policy = RetryPolicy(retries=5, max_delay=30)
    assert policy.delay(0, 4.0, rand=lambda: 0.0) == 4.0
    assert 4.0 <= policy.delay(0, 4.0, rand=lambda: 0.999) <= 4.4  # type: ignore[operator]


def test_a_retry_after_longer_than_max_delay_gives_up_instead_of_waiting() -> None:
    assert RetryPolicy(max_delay=30).delay(0, 120.0) is None


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    policy = RetryPolicy(retries=10, backoff=0.5, max_delay=3.0)
    lows = [policy.delay(n, None, rand=lambda: 0.0) for n in range(5)]
    highs = [policy.delay(n, None, rand=lambda: 1.0) for n in range(5)]
    assert lows == [0.25, 0.5, 1.0, 1.5, 1.5]
    assert highs == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_no_delay_once_the_retries_are_used_up() -> None:
    assert RetryPolicy(retries=2).delay(2, None) is None
    assert RetryPolicy(retries=0).delay(0, 0.0) is None


# --- Submitting ----------------------------------------------------------------------------


def test_submit_retries_503_with_one_idempotency_key() -> None:
    server = Recorder(
        answer(503, {"detail": "nats unavailable"}, **{"Retry-After": "0"}),
        answer(429, {"detail": "slow down"}, **{"Retry-After": "0"}),
        answer(201, {"task_id": TASK_ID, "status": "pending"}),
    )
    with server.client() as qm:
        assert qm.submit(BELL, shots=100, seed=7) == TASK_ID
    keys = {r.headers["Idempotency-Key"] for r in server.requests}
    assert len(server.requests) == 3 and len(keys) == 1
    body = json.loads(server.requests[0].content)
    assert body == {"quantum_circuit": BELL, "shots": 100, "seed": 7}


def test_each_submit_has_its_own_idempotency_key() -> None:
    server = Recorder(answer(201, {"task_id": TASK_ID, "status": "pending"}))
    with server.client() as qm:
        qm.submit(BELL)
        qm.submit(BELL)
    first, second = (r.headers["Idempotency-Key"] for r in server.requests)
    assert first != second


def test_retries_stop_and_raise_the_typed_error() -> None:
    server = Recorder(answer(503, {"detail": "redis unavailable"}, **{"Retry-After": "0"}))
    with server.client() as qm, pytest.raises(client.ServiceUnavailableError) as caught:
        qm.submit(BELL)
    assert len(server.requests) == FAST.retries + 1
    assert caught.value.status == 503 and caught.value.retry_after == 0.0
    assert "redis unavailable" in str(caught.value)


def test_a_long_retry_after_is_raised_at_once() -> None:
    server = Recorder(answer(429, {"detail": "rate limited"}, **{"Retry-After": "120"}))
    with server.client() as qm, pytest.raises(client.RateLimitedError) as caught:
        qm.submit(BELL)
    assert len(server.requests) == 1 and caught.value.retry_after == 120.0


def test_connection_refused_is_retried_then_unreachable() -> None:
    refused = httpx.ConnectError("connection refused")
    server = Recorder(refused)
    with server.client() as qm, pytest.raises(client.ServerUnreachableError) as caught:
        qm.get(TASK_ID)
    assert len(server.requests) == FAST.retries + 1
    assert "http://qmill.test" in str(caught.value)


def test_a_batch_is_resent_with_its_key_after_the_connection_broke() -> None:
    # Was: not resent (the server may have queued it). Now keyed: a resend is a replay.
    created = answer(201, {"batch_id": "b", "task_ids": ["a"]})
    server = Recorder(httpx.ReadError("connection reset"), created)
    with server.client() as qm:
        assert qm.submit_batch([BELL]).batch_id == "b"
    keys = {r.headers["Idempotency-Key"] for r in server.requests}
    assert len(server.requests) == 2 and len(keys) == 1
    with server.client() as qm:  # a new call, a new key
        qm.submit_batch([BELL])
    assert server.requests[-1].headers["Idempotency-Key"] not in keys


def test_api_key_is_sent_as_bearer_only_when_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QMILL_API_KEY", raising=False)
    server = Recorder(answer(200, view("pending")))
    with server.client(api_key="s3cret") as qm:
        qm.get(TASK_ID)
    with server.client() as qm:
        qm.get(TASK_ID)
    assert server.requests[0].headers["Authorization"] == "Bearer s3cret"
    assert "Authorization" not in server.requests[1].headers


def test_url_and_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QMILL_URL", "http://elsewhere:9000/")
    monkeypatch.setenv("QMILL_API_KEY", "from-env")
    with Client() as qm:
        assert qm.url == "http://elsewhere:9000"
        assert qm._headers["Authorization"] == "Bearer from-env"


def test_task_ids_cannot_escape_their_path_segment() -> None:
    server = Recorder(answer(404, {"detail": "Task not found"}))
    with server.client() as qm, pytest.raises(client.TaskNotFoundError):
        qm.get("../health")
    assert server.requests[0].url.raw_path == b"/tasks/..%2Fhealth"


# --- Error mapping -------------------------------------------------------------------------


def test_invalid_circuit_has_line_and_column() -> None:
    body = {"detail": "invalid OpenQASM: line 3, column 1: foo", "line": 3, "column": 1}
    server = Recorder(answer(400, body))
    with server.client() as qm, pytest.raises(client.InvalidCircuitError) as caught:
        qm.submit("OPENQASM 3.0;\nqubit q;\nfoo q;")
    assert (caught.value.line, caught.value.column) == (3, 1)
    assert len(server.requests) == 1  # a 4xx is never retried


def test_limit_exceeded_names_the_limit() -> None:
    body = {"detail": "shots is 10, the allowed maximum is 5", "limit": "shots", "allowed": 5}
    server = Recorder(answer(422, body))
    with server.client() as qm, pytest.raises(client.LimitExceededError) as caught:
        qm.submit(BELL, shots=10)
    assert (caught.value.limit, caught.value.allowed) == ("shots", 5)
    assert isinstance(caught.value, client.InvalidRequestError)


def test_field_errors_read_as_one_line() -> None:
    detail = [{"loc": ["quantum_circuit"], "msg": "Field required", "type": "missing"}]
    error = client.error_from_response(422, {"detail": detail}, {})
    assert type(error) is client.InvalidRequestError
    assert str(error) == "HTTP 422: quantum_circuit: Field required"
    assert error.detail == detail


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, client.AuthenticationError),
        (404, client.TaskNotFoundError),
        (409, client.ConflictError),
        (413, client.PayloadTooLargeError),
        (502, client.ServiceUnavailableError),
        (500, client.APIError),
    ],
)
def test_statuses_map_to_typed_errors(status: int, kind: type[client.APIError]) -> None:
    error = client.error_from_response(status, None, {}, text="<html>proxy error</html>")
    assert type(error) is kind and error.status == status
    assert "proxy error" in str(error)


def test_cancel_of_a_finished_task_is_a_conflict() -> None:
    server = Recorder(answer(409, {"detail": "the task is already completed"}))
    with server.client() as qm, pytest.raises(client.ConflictError, match="already completed"):
        qm.cancel(TASK_ID)
    assert server.requests[0].method == "DELETE"


# --- Waiting -------------------------------------------------------------------------------


def test_result_long_polls_until_terminal() -> None:
    server = Recorder(
        answer(200, view("pending")),
        answer(200, view("processing")),
        answer(200, view("completed")),
    )
    seen: list[str] = []
    with server.client() as qm:
        task = qm.wait(TASK_ID, timeout=60, on_update=lambda t: seen.append(t.status))
    assert task.counts == {"00": 512, "11": 512} and task.done
    assert seen == ["pending", "processing", "completed"]
    waits = [float(r.url.params["wait"]) for r in server.requests]
    assert all(0 < w <= client.LONG_POLL_SECONDS for w in waits)


@pytest.mark.parametrize(
    ("status", "kind"),
    [("failed", client.TaskFailedError), ("cancelled", client.TaskCancelledError)],
)
def test_result_raises_for_a_task_without_counts(
    status: str, kind: type[client.TaskFailedError]
) -> None:
    server = Recorder(answer(200, view(status, error="simulator crashed")))
    with server.client() as qm, pytest.raises(kind) as caught:
        qm.result(TASK_ID)
    assert caught.value.task.status == status
    assert "simulator crashed" in str(caught.value)


def test_wait_gives_up_at_its_timeout_and_says_the_task_runs_on() -> None:
    # A server answering at once (no long-poll): the client paces itself, then gives up.
    server = Recorder(answer(200, view("processing")))
    with server.client() as qm, pytest.raises(client.ResultTimeoutError) as caught:
        qm.wait(TASK_ID, timeout=0.5)
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.task.status == "processing"
    assert len(server.requests) < 10  # paced, not a busy loop


def test_batch_falls_back_to_single_submits_without_the_endpoint() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/batches":
            return answer(404, {"detail": "Not Found"})
        n = sum(r.url.path == "/tasks" for r in server.requests)
        return answer(201, {"task_id": f"task-{n}", "status": "pending"})

    server = Recorder(handler)
    with server.client() as qm:
        batch = qm.submit_batch([BELL, BELL, BELL], shots=10, seed=5)
    assert (batch.batch_id, list(batch)) == (None, ["task-1", "task-2", "task-3"])
    sent = [json.loads(r.content)["seed"] for r in server.requests if r.url.path == "/tasks"]
    assert sent == [5, 6, 7]  # each circuit its own seed, as the batch would give it


def test_batch_uses_the_endpoint_when_there_is_one() -> None:
    server = Recorder(answer(201, {"batch_id": "b", "task_ids": ["a", "b"]}))
    with server.client() as qm:
        batch = qm.submit_batch([BELL, BELL], shots=10, seed=3, memory=True)
    # Still usable as the list of task ids it used to be.
    assert (batch.batch_id, batch.task_ids, list(batch), batch[1], len(batch)) == (
        "b",
        ["a", "b"],
        ["a", "b"],
        "b",
        2,
    )
    sent = json.loads(server.requests[0].content)
    task = {"quantum_circuit": BELL, "shots": 10, "memory": True}
    assert sent == {"tasks": [task] * 2, "seed": 3}  # the batch's seed, once


def test_wait_batch_long_polls_the_batch_until_it_is_done() -> None:
    task = view("completed")
    running = {"batch_id": "b", "counts": {"processing": 1}, "done": False, "tasks": [task]}
    finished = {**running, "counts": {"completed": 1}, "done": True}
    server = Recorder(answer(200, running), answer(200, finished))
    seen: list[bool] = []
    with server.client() as qm:
        batch = qm.wait_batch("b", timeout=60, on_update=lambda b: seen.append(b.done))
    assert batch.done and batch.counts == {"completed": 1} and batch.task_ids == [TASK_ID]
    assert seen == [False, True]
    assert [r.url.params["wait"] for r in server.requests] == ["30", "30"]
    still = Recorder(answer(200, running))
    with still.client() as qm, pytest.raises(client.BatchTimeoutError) as caught:
        qm.wait_batch("b", timeout=0.3)
    assert isinstance(caught.value, TimeoutError) and not caught.value.batch.done


def test_batch_ids_cannot_escape_their_path_segment() -> None:
    server = Recorder(answer(404, {"detail": "Batch not found"}))
    with server.client() as qm, pytest.raises(client.TaskNotFoundError):
        qm.cancel_batch("../tasks")
    assert server.requests[0].url.raw_path == b"/batches/..%2Ftasks"
    assert server.requests[0].method == "DELETE"


def test_a_batch_error_says_which_circuit() -> None:
    body = {"detail": "tasks[1]: gates is 9, the allowed maximum is 4", "limit": "gates"}
    server = Recorder(answer(422, {**body, "allowed": 4, "index": 1}))
    with server.client() as qm, pytest.raises(client.LimitExceededError) as caught:
        qm.submit_batch([BELL, BELL])
    assert (caught.value.index, caught.value.limit) == (1, "gates")


async def test_async_client_retries_and_waits_like_the_sync_one() -> None:
    server = Recorder(
        answer(503, {"detail": "down"}, **{"Retry-After": "0"}),
        answer(201, {"task_id": TASK_ID, "status": "pending"}),
        answer(200, view("pending")),
        answer(200, view("completed")),
    )
    async with server.async_client() as qm:
        task = await qm.run(BELL, shots=1024)
    assert task.counts == {"00": 512, "11": 512}
    assert [r.method for r in server.requests] == ["POST", "POST", "GET", "GET"]
    assert (
        server.requests[0].headers["Idempotency-Key"]
        == server.requests[1].headers["Idempotency-Key"]
    )


def test_health_is_a_probe_not_retried_and_returns_unhealthy() -> None:
    body = {"status": "unhealthy", "services": {"nats": False, "redis": True}}
    server = Recorder(answer(503, body))
    with server.client() as qm:
        assert qm.health() == body
    assert len(server.requests) == 1


# --- Circuits and imports ------------------------------------------------------------------


def test_qasm_strings_pass_through_and_other_objects_are_refused() -> None:
    assert to_qasm(BELL) is BELL
    with pytest.raises(TypeError, match="QuantumCircuit"):
        to_qasm(42)


def test_a_quantum_circuit_is_sent_as_openqasm_3() -> None:
    from qiskit import QuantumCircuit

    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.cx(0, 1)
    qc.measure([0, 1], [0, 1])
    program = to_qasm(qc)
    assert program.startswith("OPENQASM 3.0;") and "cx q[0], q[1];" in program


def test_importing_qmill_stays_light() -> None:
    code = (
        "import sys, qmill, qmill.client; "
        "assert 'qiskit' not in sys.modules, 'qiskit'; "
        "import qmill as q; assert 'pydantic' not in sys.modules, 'pydantic'; "
        "print(q.Client.__module__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "qmill.client"


# --- The SVG histogram ---------------------------------------------------------------------


def bars(svg: str) -> dict[str, tuple[int, float]]:
    """outcome -> (count, bar width) from the chart's markup."""
    root = ET.fromstring(svg)
    found = {}
    for group in root.iter(f"{SVG}g"):
        if group.get("class") == "bar":
            rect = group.find(f"{SVG}rect")
            assert rect is not None
            found[group.get("data-outcome", "")] = (
                int(group.get("data-count", "-1")),
                float(rect.get("width", "0")),
            )
    return found


def test_histogram_draws_every_outcome_in_proportion() -> None:
    svg = histogram_svg({"11": 250, "00": 500, "01": 1}, title="Bell")
    drawn = bars(svg)
    assert list(drawn) == ["00", "01", "11"]  # sorted by outcome
    assert drawn["00"][0] == 500 and drawn["11"][0] == 250
    assert drawn["11"][1] == pytest.approx(drawn["00"][1] / 2, abs=0.1)
    assert drawn["01"][1] >= 1  # a rare outcome still shows
    assert "751 shots, 3 outcomes" in svg and ">Bell<" in svg


def test_histogram_escapes_text() -> None:
    svg = histogram_svg({'<a&"b>': 3}, title="<script>alert(1)</script>")
    assert "<script>" not in svg
    assert list(bars(svg)) == ['<a&"b>']  # parsed back intact


def test_histogram_keeps_the_most_frequent_outcomes_and_says_so() -> None:
    counts = {format(i, "010b"): i + 1 for i in range(200)}
    svg = histogram_svg(counts, max_bars=16)
    drawn = bars(svg)
    assert len(drawn) == 16 and min(c for c, _ in drawn.values()) == 185
    assert "the 184 least frequent are not shown" in svg


def test_histogram_of_nothing_is_still_a_picture() -> None:
    svg = histogram_svg({})
    assert bars(svg) == {} and "no counts" in svg
    ET.fromstring(svg)


def test_histogram_refuses_bad_counts() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        histogram_svg({"0": -1})


def test_histogram_is_deterministic() -> None:
    counts = {"00": 3, "11": 3, "01": 3}
    assert histogram_svg(counts) == histogram_svg(dict(reversed(counts.items())))


# --- The CLI's pure parts ------------------------------------------------------------------


def test_counts_table_sorts_and_scales_bars() -> None:
    lines = cli.counts_table({"00": 500, "11": 250, "01": 3}, width=40)
    assert lines[0].split() == ["outcome", "count", "share"]
    assert [line.split()[0] for line in lines[1:]] == ["00", "11", "01"]
    assert lines[1].endswith("█" * 40) and lines[2].endswith("█" * 20)
    assert lines[3].split()[-1] in "▏▎▍▌▋▊▉"  # 3/500 of 40 columns: a sliver, not nothing
    by_outcome = cli.counts_table({"11": 1, "00": 2}, order="outcome", unicode=False)
    assert [line.split()[0] for line in by_outcome[1:]] == ["00", "11"]
    assert by_outcome[1].endswith("#" * 40)


def test_counts_table_cuts_long_results() -> None:
    lines = cli.counts_table({format(i, "04b"): i + 1 for i in range(16)}, top=4)
    assert len(lines) == 1 + 4 + 1
    assert lines[-1].startswith("... and 12 more outcomes (78 shots)")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (client.ResultTimeoutError(client.Task(TASK_ID, "pending", 1), 1.0), cli.EXIT_TIMEOUT),
        (client.TaskFailedError(client.Task(TASK_ID, "failed", 1)), cli.EXIT_TASK_FAILED),
        (client.ConflictError("x", status=409), cli.EXIT_TASK_FAILED),
        (client.TaskNotFoundError("x", status=404), cli.EXIT_NOT_FOUND),
        (client.ServerUnreachableError("x"), cli.EXIT_UNAVAILABLE),
        (client.ServiceUnavailableError("x", status=503), cli.EXIT_UNAVAILABLE),
        (client.RateLimitedError("x", status=429), cli.EXIT_UNAVAILABLE),
        (client.InvalidCircuitError("x", status=400), cli.EXIT_USAGE),
        (client.AuthenticationError("x", status=401), cli.EXIT_USAGE),
    ],
)
def test_exit_codes(error: client.QmillClientError, code: int) -> None:
    assert cli.exit_code(error) == code


def test_help_lists_the_commands_and_the_exit_codes() -> None:
    result = CliRunner().invoke(cli.main, ["--help"])
    assert result.exit_code == 0
    for command in ("up", "submit", "get", "cancel", "health", "bench", "config"):
        assert f"  {command} " in result.output
    assert "Exit codes:" in result.output and "4  task not found" in result.output
    submit_help = CliRunner().invoke(cli.main, ["submit", "--help"]).output
    assert "QMILL_URL" in submit_help and "QMILL_API_KEY" in submit_help


def test_bench_without_the_suite_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli.main, ["bench"])
    assert result.exit_code == cli.EXIT_USAGE
    assert "no benchmark suite" in result.output


def test_bench_passes_arguments_and_exit_code_through(tmp_path: Path) -> None:
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "run.py").write_text(
        "import sys\nprint('args', sys.argv[1:])\nsys.exit(7)\n"
    )
    # A child process: bench.run's output goes to the real stdout, not click's runner.
    code = "from qmill import cli; cli.main(['bench', '--quick', '-n', '3'])"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 7, done.stderr
    assert "args ['--quick', '-n', '3']" in done.stdout
