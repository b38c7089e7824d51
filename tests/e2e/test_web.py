"""The web page at / in a real headless Chromium, against the real system.

Debian's ``chromium`` driven by Playwright through ``executable_path``: Playwright's own
browser downloads are never used (``.ci/run`` installs the Debian package). Set
$QMILL_CHROMIUM to use another Chromium binary. Without one, the browser tests skip
with the reason at the end of the run (`require_binary`); in CI they fail.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import BELL, REPO, require_binary
from tests.e2e.system import System
from tests.integration.test_worker import runaway_circuit

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("QMILL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# docs/web.png is refreshed only on request (QMILL_UPDATE_DOCS=1 make test), so a test
# run leaves the work tree as it found it.
SCREENSHOT = REPO / "docs" / "web.png"
# Long enough for a cold worker; the page shows "completed" as soon as it is.
DONE = 60_000


@pytest.fixture(scope="module")
def system(default_system: System) -> System:
    return default_system


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    chromium = require_binary(
        CHROMIUM,
        "the web page is tested in a real Chromium: `apt-get install chromium` "
        "(what .ci/run does), or point $QMILL_CHROMIUM at one",
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser, system: System) -> Iterator[Page]:
    """A fresh browser context (empty localStorage) on the page; fails on any JS error.

    Chromium also logs every 4xx answer as a console error; those are API answers the
    page handles (a 400 for a bad program), so only script errors count.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    errors: list[str] = []
    page = context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    try:
        page.goto(system.url + "/")
        expect(page.locator("#health")).to_have_attribute("data-state", "healthy")
        yield page
        assert errors == []
    finally:
        context.close()


@cache
def runaway() -> str:
    """A program that simulates for minutes: it stays unfinished until cancelled."""
    return runaway_circuit()


def api(system: System) -> httpx.Client:
    """Another client of the same tenant (auth is off: everyone is one tenant)."""
    return httpx.Client(base_url=system.url, timeout=30)


def as_before_listing_and_events(page: Page) -> list[str]:
    """The page against a server without GET /tasks (405: only POST is routed there) and
    GET /events (404), as before issue 14: reloaded so that it starts that way. Returns
    the URLs the page requests from then on."""
    not_found = '{"detail": "Not Found"}'
    page.route(
        re.compile(r"/events\?"),
        lambda route: route.fulfill(status=404, content_type="application/json", body=not_found),
    )
    page.route(
        re.compile(r"/tasks\?"),
        lambda route: route.fulfill(
            status=405,
            headers={"Allow": "POST"},
            content_type="application/json",
            body='{"detail": "method GET not allowed here; use POST", "allowed": ["POST"]}',
        ),
    )
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.reload()
    return requests


def record_statuses(page: Page) -> None:
    """Keep every status the page shows, so a test can tell it changed live."""
    page.evaluate(
        """() => {
          window.seen = [];
          const el = document.getElementById("task-status");
          new MutationObserver(() => {
            const s = el.dataset.status;
            if (s && window.seen[window.seen.length - 1] !== s) window.seen.push(s);
          }).observe(el, { attributes: true, attributeFilter: ["data-status"] });
        }"""
    )


def run(page: Page, program: str, shots: int) -> None:
    page.fill("#qasm", program)
    page.fill("#shots", str(shots))
    page.click("#submit")


def bars(page: Page) -> dict[str, int]:
    drawn = page.locator("#histogram svg g.bar")
    return {
        drawn.nth(i).get_attribute("data-outcome") or "": int(
            drawn.nth(i).get_attribute("data-count") or -1
        )
        for i in range(drawn.count())
    }


def test_the_page_is_served_at_the_root(system: System) -> None:
    response = httpx.get(system.url + "/", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "<title>qmill</title>" in response.text


Q3 = 'OPENQASM 3.0; include "stdgates.inc"; '


def test_the_circuit_is_drawn_as_text(system: System) -> None:
    """GET /tasks/{id}/diagram.txt: the submitted program drawn by Qiskit's text drawer,
    parsed and drawn in one of the result function's parse processes."""
    with httpx.Client(base_url=system.url, timeout=30) as http:
        task_id = http.post("/tasks", json={"quantum_circuit": BELL}).json()["task_id"]
        drawn = http.get(f"/tasks/{task_id}/diagram.txt")
        assert drawn.status_code == 200, drawn.text
        assert drawn.headers["content-type"] == "text/plain; charset=utf-8"
        assert "q_0: ┤ H ├──■──" in drawn.text and "c: 2/═" in drawn.text
        # Too wide: refused before drawing (1000 qubits x 100 operations took 292 s).
        wide = Q3 + "qubit[200] q; bit c; h q[0]; c = measure q[0];"
        task_id = http.post("/tasks", json={"quantum_circuit": wide}).json()["task_id"]
        started = time.monotonic()
        refused = http.get(f"/tasks/{task_id}/diagram.txt")
        assert time.monotonic() - started < 5
        assert refused.status_code == 422
        assert refused.json()["detail"].startswith("the circuit is too large to draw: 201 wires")
        missing = http.get("/tasks/5b8e3f4e-0000-4000-8000-000000000000/diagram.txt")
        assert (missing.status_code, missing.json()) == (404, {"detail": "Task not found"})


def test_submit_a_bell_circuit_and_see_its_histogram(page: Page, tmp_path: Path) -> None:
    record_statuses(page)
    run(page, BELL.replace("; ", ";\n") + "\n", 512)
    status = page.locator("#task-status")
    expect(status).to_have_attribute("data-status", "completed", timeout=DONE)
    expect(page.locator("#histogram svg g.bar")).to_have_count(2)
    counts = bars(page)
    assert set(counts) == {"00", "11"} and sum(counts.values()) == 512
    # The same chart as the histogram.svg endpoint, with the outcomes as visible text.
    labels = page.locator("#histogram svg g.bar text").all_text_contents()
    assert "00" in labels and "11" in labels
    # The circuit as the server drew it, beside the histogram.
    expect(page.locator("#diagram")).to_contain_text("q_0: ┤ H ├──■──")
    seen = page.evaluate("window.seen")
    assert seen[0] == "pending" and seen[-1] == "completed", seen  # updated without reload
    task_id = page.locator("#task-id").text_content() or ""
    row = page.locator(f'#recent tr[data-task-id="{task_id}"]')
    expect(row.locator(".status")).to_have_text("completed")
    shot = SCREENSHOT if os.environ.get("QMILL_UPDATE_DOCS") == "1" else tmp_path / "web.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # Recent tasks survive a reload (localStorage), and one click shows a task again.
    page.goto(page.url.split("#")[0])
    expect(row.locator(".status")).to_have_text("completed")
    expect(page.locator("#task")).to_be_hidden()
    row.locator("a").click()
    expect(page.locator("#task-id")).to_have_text(task_id)
    expect(page.locator("#histogram svg g.bar")).to_have_count(2)
    assert bars(page) == counts


def test_a_program_that_does_not_parse_points_at_its_line(page: Page) -> None:
    run(page, "OPENQASM 3.0;\nqubit q;\nfoo q;\n", 10)
    expect(page.locator("#form-error")).to_contain_text("line 3, column 1")
    # The offending line is selected in the editor.
    selected = page.evaluate(
        "() => { const a = document.getElementById('qasm');"
        " return a.value.slice(a.selectionStart, a.selectionEnd); }"
    )
    assert selected == "foo q;"
    expect(page.locator("#task")).to_be_hidden()


def test_upload_a_file(page: Page, tmp_path: Path) -> None:
    """Against a server without the listing and the events (as before issue 14): the
    list is this browser's history and the task is long-polled."""
    requests = as_before_listing_and_events(page)
    ghz = tmp_path / "ghz3.qasm"
    ghz.write_text(
        'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[3] q;\nbit[3] c;\n'
        "h q[0];\ncx q[0], q[1];\ncx q[1], q[2];\nc = measure q;\n"
    )
    page.set_input_files("#file", str(ghz))
    expect(page.locator("#qasm")).to_have_value(ghz.read_text())
    page.fill("#shots", "200")
    page.click("#submit")
    expect(page.locator("#task-status")).to_have_attribute("data-status", "completed", timeout=DONE)
    expect(page.locator("#histogram svg")).to_have_count(1)  # drawn right after the status
    counts = bars(page)
    assert set(counts) <= {"000", "111"} and sum(counts.values()) == 200
    expect(page.locator("#recent tbody tr").first).to_contain_text("ghz3.qasm")
    expect(page.locator("#recent-source")).to_have_text("(submitted from this browser)")
    assert sum("/tasks?" in url for url in requests) == 1, requests  # asked once, on load


def test_cancel_a_running_task(page: Page) -> None:
    """Against a server without events (as before issue 14): long-polled instead."""
    requests = as_before_listing_and_events(page)
    run(page, runaway(), 10)  # minutes of simulation
    cancel = page.locator("#cancel")
    expect(cancel).to_be_visible()
    deadline = time.monotonic() + 10
    while not any("?wait=" in url for url in requests):
        assert time.monotonic() < deadline, requests
        page.wait_for_timeout(50)
    assert any("/events?task=" in url for url in requests)  # tried first
    cancel.click()
    expect(page.locator("#task-status")).to_have_attribute("data-status", "cancelled")
    expect(cancel).to_be_hidden()
    expect(page.locator("#histogram svg")).to_have_count(0)


def test_the_list_shows_the_tenants_tasks_and_follows_one_live(page: Page, system: System) -> None:
    """Tasks another client submitted (never in this browser's localStorage) are listed,
    newest first, a page at a time, filtered by tag and status on the server; the task
    on show is followed by its event stream: another client's cancel reaches the page
    and its row, with no GET /tasks/{id} after the first and no long-poll."""
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    run = uuid.uuid4().hex[:12]
    with api(system) as http:
        many = [{"quantum_circuit": BELL, "shots": 10}] * 21
        batch = http.post("/batches", json={"tasks": many, "tags": {"run": run}}).json()
        body = {"quantum_circuit": runaway(), "shots": 10, "tags": {"run": run, "kind": "lone"}}
        lone = http.post("/tasks", json=body).json()["task_id"]
        page.fill("#filter-tag", f"run:{run}")
        page.press("#filter-tag", "Enter")
        rows = page.locator("#recent tbody tr")
        expect(rows).to_have_count(20)  # one page
        expect(page.locator("#recent-source")).to_contain_text("from the server")
        expect(rows.first).to_have_attribute("data-task-id", lone)  # newest first
        expect(rows.first).to_contain_text("kind:lone")
        page.click("#load-more")
        expect(rows).to_have_count(22)
        expect(page.locator("#load-more")).to_be_hidden()
        expect(page.locator(f'#recent a[href="#batch={batch["batch_id"]}"]')).to_have_count(21)

        rows.first.locator("a").click()
        status = page.locator("#task-status")
        expect(status).to_have_attribute("data-status", re.compile("^(pending|processing)$"))
        deadline = time.monotonic() + 10
        while not any(f"/events?task={lone}" in url for url in requests):
            assert time.monotonic() < deadline, requests
            page.wait_for_timeout(50)
        assert http.delete(f"/tasks/{lone}").status_code == 200
    expect(status).to_have_attribute("data-status", "cancelled")
    expect(rows.first.locator(".status")).to_have_text("cancelled")
    reads = [url for url in requests if re.search(rf"/tasks/{lone}(\?|$)", url)]
    assert len(reads) == 1 and "wait=" not in reads[0], reads

    page.check('#filters input[value="cancelled"]')
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-task-id", lone)
    page.fill("#filter-tag", f"run:{run}, kind:other")
    page.press("#filter-tag", "Enter")
    expect(rows).to_have_count(0)
    expect(page.locator("#recent-empty")).to_be_visible()
    assert page.evaluate("localStorage.getItem('qmill.recent')") is None


def test_a_batch_is_shown_with_its_progress_and_cancelled(page: Page, system: System) -> None:
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    with api(system) as http:
        tasks = [{"quantum_circuit": BELL, "shots": 10}] * 2 + [{"quantum_circuit": runaway()}]
        batch_id = http.post("/batches", json={"tasks": tasks}).json()["batch_id"]
    page.goto(f"{system.url}/#batch={batch_id}")
    expect(page.locator("#batch-id")).to_have_text(batch_id)
    expect(page.locator("#batch-tasks tbody tr")).to_have_count(3)
    completed = page.locator('#batch-counts span[data-status="completed"]')
    expect(completed).to_have_attribute("data-count", "2", timeout=DONE)
    expect(page.locator("#batch-done")).to_have_text("2 of 3 finished")
    progress = page.locator("#batch-progress")
    assert (progress.get_attribute("max"), progress.get_attribute("value")) == ("3", "2")
    # Followed by the batch's event stream, not by reading the batch again and again.
    assert any(f"/events?batch={batch_id}" in url for url in requests), requests
    assert sum(f"/batches/{batch_id}" in url for url in requests) == 1, requests
    page.click("#batch-cancel")
    cancelled = page.locator('#batch-counts span[data-status="cancelled"]')
    expect(cancelled).to_have_attribute("data-count", "1")
    expect(page.locator("#batch-done")).to_have_text("3 of 3 finished")
    expect(page.locator("#batch-cancel")).to_be_hidden()
    # One click from a task of the batch to the task, and back.
    page.locator("#batch-tasks tbody tr a").first.click()
    expect(page.locator("#task-status")).to_have_attribute("data-status", "completed")
    page.click("#link-batch")
    expect(page.locator("#batch-id")).to_have_text(batch_id)
