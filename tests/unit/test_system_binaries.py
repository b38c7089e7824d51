"""`require_binary`: a missing system binary skips its tests, except where CI asks for it.

``make test`` must pass where only Python and pip are installed, and CI, which installs
Chromium and nginx, must never skip the tests that drive them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests import conftest
from tests.conftest import REQUIRE_BINARIES_ENV, require_binary


@pytest.fixture(autouse=True)
def no_missing_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests' made-up binaries must not appear in the run's missing-binaries list."""
    monkeypatch.setattr(conftest, "MISSING_BINARIES", {})


def test_a_missing_binary_skips_with_its_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(REQUIRE_BINARIES_ENV, raising=False)
    absent = str(tmp_path / "chromium")
    with pytest.raises(pytest.skip.Exception) as skipped:
        require_binary(absent, "the web page needs a browser")
    assert absent in str(skipped.value) and "the web page needs a browser" in str(skipped.value)
    assert REQUIRE_BINARIES_ENV in str(skipped.value)
    assert {absent: "the web page needs a browser"} == conftest.MISSING_BINARIES


def test_a_missing_binary_fails_where_ci_requires_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(REQUIRE_BINARIES_ENV, "1")
    with pytest.raises(pytest.fail.Exception) as failed:
        require_binary("qmill-no-such-binary", "nginx runs the gateway's config")
    assert "qmill-no-such-binary" in str(failed.value)
    assert "nginx runs the gateway's config" in str(failed.value)
    assert conftest.MISSING_BINARIES == {}


@pytest.mark.parametrize("required", ["", "1"])
def test_a_present_binary_is_returned(monkeypatch: pytest.MonkeyPatch, required: str) -> None:
    monkeypatch.setenv(REQUIRE_BINARIES_ENV, required)
    assert require_binary(sys.executable, "a path") == sys.executable
    name = Path(sys.executable).name
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))
    assert require_binary(name, "a name on PATH") == str(Path(sys.executable).parent / name)
