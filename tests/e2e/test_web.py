"""The web page at / in a real headless Chromium, against the real system.

Debian's ``chromium`` driven by Playwright through ``executable_path``: Playwright's own
browser downloads are never used (``.ci/run`` installs the Debian package). Set
$QMILL_CHROMIUM to use another Chromium binary. Without one, the browser tests skip
with the reason at the end of the run (`require_binary`); in CI they fail.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
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


def test_cancel_a_running_task(page: Page) -> None:
    run(page, runaway_circuit(), 10)  # minutes of simulation
    cancel = page.locator("#cancel")
    expect(cancel).to_be_visible()
    cancel.click()
    expect(page.locator("#task-status")).to_have_attribute("data-status", "cancelled")
    expect(cancel).to_be_hidden()
    expect(page.locator("#histogram svg")).to_have_count(0)
