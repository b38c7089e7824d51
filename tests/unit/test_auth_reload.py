"""Revoking a key by editing ``[auth] keys_file``, without a restart (issue 13, item 7).

Real files, a fake clock: the bound (``keys_file_check_seconds``) is asserted exactly,
not by sleeping. `authorize` runs with the rate limit off, so it needs no Redis.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from qmill.server.auth import KeyRing, authorize, hash_key, key_ring
from qmill.server.config import AuthSettings
from qmill.server.errors import DependencyUnavailable, Unauthorized

ALICE, BOB = "qm_alice-key-0001", "qm_bob-key-0002"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ring(path: Path, clock: Clock, check_seconds: float = 2.0) -> KeyRing:
    return KeyRing(frozenset(), str(path), check_seconds, clock=clock)


def write(path: Path, *keys: str) -> None:
    # Replaced atomically, as a secret mount or `mv` does; the size changes too.
    tmp = path.with_suffix(".new")
    tmp.write_text("".join(f"{hash_key(k)}  # {k[3:8]}\n" for k in keys))
    os.replace(tmp, path)


def test_a_removed_key_is_refused_within_the_bound_and_an_added_one_accepted(
    tmp_path: Path,
) -> None:
    keys, clock = tmp_path / "keys", Clock()
    write(keys, ALICE)
    keyring = ring(keys, clock)
    assert keyring.known() == {hash_key(ALICE)}
    write(keys, BOB)
    clock.now += 1.9  # inside the bound the set may still be the old one
    assert keyring.known() == {hash_key(ALICE)}
    clock.now += 0.1  # at the bound it is the file's
    assert keyring.known() == {hash_key(BOB)}


def test_an_edit_in_place_is_seen(tmp_path: Path) -> None:
    keys, clock = tmp_path / "keys", Clock()
    keys.write_text(f"{hash_key(ALICE)}\n{hash_key(BOB)}\n")
    keyring = ring(keys, clock, check_seconds=0)
    assert keyring.known() == {hash_key(ALICE), hash_key(BOB)}
    with keys.open("r+") as handle:  # same inode: truncate and rewrite
        handle.truncate(0)
        handle.write(f"{hash_key(BOB)}\n")
    assert keyring.known() == {hash_key(BOB)}


@pytest.mark.parametrize("damage", ["missing", "malformed", "not-utf8"])
def test_a_broken_keys_file_fails_closed_until_repaired(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    keys, clock = tmp_path / "keys", Clock()
    write(keys, ALICE)
    keyring = ring(keys, clock, check_seconds=0)
    assert keyring.known() == {hash_key(ALICE)}
    if damage == "missing":
        keys.unlink()
    elif damage == "malformed":
        keys.write_text(hash_key(ALICE) + "\nnot-a-hash\n")
    else:
        keys.write_bytes(b"\xff\xfe" + hash_key(ALICE).encode())
    # Neither the last good set (ALICE may be the key being revoked) nor a 500: a 503.
    with pytest.raises(DependencyUnavailable) as info:
        keyring.known()
    assert info.value.status_code == 503 and str(keys) not in info.value.message
    assert any("keys_file" in str(getattr(r, "error", "")) for r in caplog.records)
    write(keys, BOB)
    assert keyring.known() == {hash_key(BOB)}


async def test_authorize_follows_the_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    write(keys, ALICE)
    settings = AuthSettings(
        enabled=True,
        api_key_hashes=[hash_key(BOB)],
        keys_file=str(keys),
        keys_file_check_seconds=0,
        rate_per_second=0,
    )
    no_limits: Any = None  # rate_per_second=0: the limits are never touched
    bearer = {"authorization": f"Bearer {ALICE}"}
    assert await authorize(bearer, settings, no_limits) == hash_key(ALICE)[:16]
    write(keys)  # ALICE revoked; BOB is inline, not in the file, and stays
    with pytest.raises(Unauthorized):
        await authorize(bearer, settings, no_limits)
    assert await authorize({"x-api-key": BOB}, settings, no_limits) == hash_key(BOB)[:16]
    assert key_ring(settings) is key_ring(settings)  # one ring per process and settings
