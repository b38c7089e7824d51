"""How a task's answer is stored: plain JSON fields, or one compressed fragment.

An answer (counts, shot memory, a sweep's results, expectation values) can be hundreds
of times larger than its request: 100k shots of memory on 128 bits is 26 MB of JSON.
Over `COMPRESS_ABOVE_BYTES` it is stored under a key of its own (so reading the record,
as long-polls and batches do, never reads it) holding the raw DEFLATE of the answer's
members as they appear in the HTTP answer (``"result":{...},"memory":[...]``), ended
by a sync flush, so it can be spliced into a
gzip response without decompressing it (`gzip_body`): the result function then sends
what Redis holds, and a GET of a big result costs about its compressed size. Smaller
answers stay in the plain fields of the first API (``result``, ``shot_memory``, ...),
which every reader already knows.

This module is the one place that decides which form a record gets, and the one that
reads either form back.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Answers whose JSON is longer are stored compressed. Below it compression saves little
# (a Bell task's counts are ~30 bytes) and plain fields stay readable with redis-cli.
COMPRESS_ABOVE_BYTES = 16 * 1024
# The record's field that says its answer is compressed (under `constants.answer_key`):
# "crc32 length" of the fragment, which a gzip trailer needs without decompressing it.
ANSWER_CHECK_FIELD = "answer_crc"
# zlib level 4: the largest answer admitted (15.8 MB of random 128-bit shots and their
# counts) to 2.9 MB in 0.31 s here; level 6 (zlib's default) made 2.7 MB in 5.0 s, on
# the worker's event loop, and level 1 3.7 MB in 0.63 s.
_LEVEL = 4
_RAW = -zlib.MAX_WBITS  # raw DEFLATE: no zlib header or trailer, so fragments splice
_CHUNK = 256 * 1024

# The answer's members: (name in the HTTP answer, plain hash field).
MEMBERS = (
    ("result", "result"),
    ("memory", "shot_memory"),
    ("results", "results"),
    ("evs", "evs"),
    ("stds", "stds"),
)
_MEMBER_NAMES = frozenset(name for name, _ in MEMBERS)


@dataclass(frozen=True, slots=True)
class Packed:
    """A compressed answer as stored: the fragment's DEFLATE, its CRC-32 and length."""

    deflated: bytes
    crc: int
    length: int

    def members(self) -> dict[str, Any]:
        """The answer's members, decompressed and parsed (costs the whole answer)."""
        # A stream ended by a sync flush, not a final block: zlib.decompress would call
        # it truncated, a decompressor object returns what it holds.
        text = zlib.decompressobj(_RAW).decompress(self.deflated)
        parsed: dict[str, Any] = json.loads(b"{" + text + b"}")
        return parsed

    def json_chunks(self) -> Iterator[bytes]:
        """The fragment's JSON, decompressed a chunk at a time (bounded memory)."""
        inflater = zlib.decompressobj(_RAW)
        data = self.deflated
        while data:
            yield inflater.decompress(data, _CHUNK)
            data = inflater.unconsumed_tail
        tail = inflater.flush()
        if tail:
            yield tail


@dataclass(frozen=True, slots=True)
class Encoded:
    """An answer as it will be stored: hash fields, and the compressed fragment (kept
    under its own key, `constants.answer_key`) when it is big."""

    fields: dict[str, str]
    deflated: bytes | None

    @property
    def size(self) -> int:
        """Bytes it takes as stored (what the tenant's quota is charged for it)."""
        plain = sum(len(k) + len(v) for k, v in self.fields.items())
        return plain + (len(self.deflated) if self.deflated is not None else 0)


def encode(members: Mapping[str, object]) -> Encoded:
    """How to store an answer, given its members by HTTP name (None: absent). Plain
    JSON fields when small; else the compressed fragment and a check field, with no
    plain answer field."""
    present = {name: value for name, value in members.items() if value is not None}
    plain = {name: json.dumps(value) for name, value in present.items()}
    if sum(len(text) for text in plain.values()) <= COMPRESS_ABOVE_BYTES:
        names = dict(MEMBERS)
        return Encoded({names[name]: text for name, text in plain.items()}, None)
    del plain
    # Every member, null when absent: a reader replaces all of them with the fragment.
    fragment = ",".join(
        f"{json.dumps(name)}:{json.dumps(members.get(name), separators=(',', ':'))}"
        for name, _ in MEMBERS
    ).encode()
    deflater = zlib.compressobj(_LEVEL, zlib.DEFLATED, _RAW)
    deflated = deflater.compress(fragment) + deflater.flush(zlib.Z_SYNC_FLUSH)
    check = f"{zlib.crc32(fragment)} {len(fragment)}"
    return Encoded({ANSWER_CHECK_FIELD: check}, deflated)


def check_of(raw: Mapping[str, str]) -> str | None:
    """The check field of a record whose answer is stored compressed, else None."""
    return raw.get(ANSWER_CHECK_FIELD) or None


def packed(check: str, deflated: bytes) -> Packed:
    """The compressed answer from its check field and its key's bytes."""
    crc, length = (int(part) for part in check.split())
    return Packed(deflated, crc, length)


# --- gzip ------------------------------------------------------------------------------------

# RFC 1952: magic, DEFLATE, no flags, no mtime, no extra flags, OS unknown.
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


# A response body as pieces: JSON text, and compressed answers to put between them.
Piece = bytes | Packed


def gzip_parts(pieces: Sequence[Piece]) -> list[bytes | memoryview]:
    """One gzip member whose content is the pieces in order (each `Packed` as its JSON),
    made without decompressing any answer: DEFLATE streams of independently compressed
    pieces concatenate as long as only the last one ends the stream, and the CRC-32 of
    the whole is combined from the pieces' (`crc32_combine`). The stored answers are
    sent in slices of themselves, never copied."""
    out: list[bytes | memoryview] = [_GZIP_HEADER]
    crc, size = 0, 0
    for index, piece in enumerate(pieces):
        if isinstance(piece, Packed):
            stored = memoryview(piece.deflated)
            out += [stored[at : at + _CHUNK] for at in range(0, len(stored), _CHUNK)]
            crc = crc32_combine(crc, piece.crc, piece.length)
            size += piece.length
            continue
        deflater = zlib.compressobj(_LEVEL, zlib.DEFLATED, _RAW)
        end = zlib.Z_FINISH if index == len(pieces) - 1 else zlib.Z_SYNC_FLUSH
        out.append(deflater.compress(piece) + deflater.flush(end))
        crc = crc32_combine(crc, zlib.crc32(piece), len(piece))
        size += len(piece)
    if isinstance(pieces[-1], Packed):  # a stream must end with a final block
        out.append(zlib.compressobj(_LEVEL, zlib.DEFLATED, _RAW).flush(zlib.Z_FINISH))
    out.append(crc.to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little"))
    return out


def json_parts(pieces: Sequence[Piece]) -> Iterator[bytes]:
    """The pieces as plain JSON, each compressed answer decompressed a chunk at a time."""
    for piece in pieces:
        if isinstance(piece, Packed):
            yield from piece.json_chunks()
        else:
            yield piece


def spliced(body: Mapping[str, Any], answer: Packed) -> list[Piece]:
    """A task's JSON (``body``, without the answer's members) with its compressed answer
    put in: ``{...,`` answer ``}``, as JSONResponse renders (compact, UTF-8)."""
    rest = {name: value for name, value in body.items() if name not in _MEMBER_NAMES}
    rendered = json.dumps(rest, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return [rendered[:-1].encode() + b",", answer, b"}"]  # never empty: it has an id


def _gf2_times(matrix: list[int], vector: int) -> int:
    total, row = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[row]
        vector >>= 1
        row += 1
    return total


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, matrix[n]) for n in range(32)]


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC-32 of A + B from CRC-32(A), CRC-32(B) and len(B): zlib's crc32_combine
    (which Python's zlib does not expose), in O(log len(B)) 32x32 GF(2) products."""
    if length2 <= 0:
        return crc1
    odd = [0xEDB88320] + [1 << n for n in range(31)]  # one zero bit
    even = _gf2_square(odd)  # two zero bits
    odd = _gf2_square(even)  # four
    while True:
        even = _gf2_square(odd)  # apply len2's bits, a zero byte at a time upwards
        if length2 & 1:
            crc1 = _gf2_times(even, crc1)
        length2 >>= 1
        if not length2:
            break
        odd = _gf2_square(even)
        if length2 & 1:
            crc1 = _gf2_times(odd, crc1)
        length2 >>= 1
        if not length2:
            break
    return crc1 ^ crc2
