"""The abuse corpus: hundreds of hostile requests against the real system, over HTTP.

For every one: a 4xx (never a 5xx), a response that conforms to openapi.json (the e2e
conftest checks that), no process of the system crashed or restarted (same pids), and
nothing queued or recorded (JetStream's last sequence number and qmill's Redis keys are
unchanged). The rejection latency of each is measured and printed (p50, p99, max, the
slowest); the goal is under 100 ms at p99, asserted only with a generous bound because
this machine is shared with benchmarks.

The corpus is built here, deterministically: hand-written cases by kind (huge numbers,
deep nesting, long programs, includes, recursive and exponential gate definitions,
parser exceptions, confusables, bad bodies, bad headers, bad ids and paths) plus
mutations of valid programs (seeded random edits, each confirmed locally to be refused
before it is sent, so the corpus never holds a program the system should accept).
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache

import httpx
import psutil
import pytest
import redis
from nats.js.errors import NotFoundError

from qmill.server import constants
from qmill.server.config import Settings
from qmill.server.errors import RequestError
from qmill.server.qasm import pool
from qmill.server.tasks import validate_submit
from tests.e2e.system import System, running_system
from tests.openapi_check import CONFORMANCE

pytestmark = pytest.mark.e2e

Q3 = 'OPENQASM 3.0;\ninclude "stdgates.inc";\n'
Q2 = 'OPENQASM 2.0;\ninclude "qelib1.inc";\n'
BELL3 = Q3 + "qubit[2] q;\nbit[2] c;\nh q[0];\ncx q[0], q[1];\nc = measure q;\n"
BELL2 = Q2 + "qreg q[2];\ncreg c[2];\nh q[0];\ncx q[0],q[1];\nmeasure q -> c;\n"
GHZ3 = (
    Q3
    + "qubit[5] q;\nbit[5] c;\nh q[0];\n"
    + "".join(f"cx q[{i}], q[{i + 1}];\n" for i in range(4))
)
GHZ3 += "rz(0.25) q[2];\nc = measure q;\n"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Hostile:
    name: str
    body: bytes | None = None
    method: str = "POST"
    path: str = "/tasks"
    headers: dict[str, str | bytes] = field(default_factory=dict)
    expect: tuple[int, ...] = ()  # exact statuses allowed; () = any 4xx

    @staticmethod
    def program(name: str, source: str, *expect: int, **fields: object) -> Hostile:
        body = json.dumps({"quantum_circuit": source, **fields}).encode()
        return Hostile(f"program/{name}", body, expect=expect)


def programs() -> Iterator[Hostile]:
    p = Hostile.program
    # --- huge numbers ------------------------------------------------------------------
    for n in (
        "99999999999",
        "10000000000000000000000000000000",
        "0x7fffffff",
        "1_000_000_000",
        "99999*99999",
        "4294967296",
        "1001",
        "-1",
        "0",
        "2**40",
        "1e9",
        "n",
    ):
        yield p(f"qubit[{n[:12]}]", Q3 + f"qubit[{n}] q; bit c; c = measure q[0];")
        yield p(f"bit[{n[:12]}]", Q3 + f"qubit q; bit[{n}] c; c[0] = measure q;")
    for n in ("99999999999", "1001", "4294967296", "0"):
        yield p(f"qreg[{n}]", Q2 + f"qreg q[{n}]; creg c[1]; measure q[0] -> c[0];")
        yield p(f"creg[{n}]", Q2 + f"qreg q[1]; creg c[{n}]; measure q[0] -> c[0];")
    yield p("many-single-qubits", Q3 + "qubit q0; " * 1200 + "bit c; c = measure q0;", 422)
    yield p("many-registers", Q3 + "".join(f"qubit[900] r{i}; " for i in range(3)) + "bit c;", 422)
    for i, angle in enumerate(
        (
            "1e99999",
            "-1e99999",
            "1e308*10",
            "9" * 400,
            "9" * 5000,
            "1e308/1e-308",
            "0/0",
            "1/0",
            "nan",
            "inf",
            "pi*1e400",
            "0x" + "f" * 300,
        )
    ):
        yield p(f"rz-{i}", Q3 + f"qubit q; bit c; rz({angle}) q; c = measure q;")
        yield p(f"u-{i}", Q2 + f"qreg q[1]; creg c[1]; U({angle},0,0) q[0]; measure q -> c;")
    for index in ("99999999999", "-99999999999", "2", "9" * 400, "1.5", "q"):
        yield p(f"index[{index[:12]}]", Q3 + f"qubit[2] q; bit c; x q[{index}]; c = measure q[0];")
    for rng in (
        "[0:100000000]",
        "[0:1000000000000]",
        "[0:10**30]",
        "[0:2:1000000000]",
        "[1000000000:0:-1]",
        "{" + ",".join(["1"] * 30000) + "}",
    ):
        yield p(
            f"for{rng[:16]}", Q3 + f"qubit q; bit c; for int i in {rng} {{ x q; }} c = measure q;"
        )
    yield p(
        "nested-for",
        Q3
        + "qubit q; bit c; for int i in [0:1000] { for int j in [0:1000] { x q; } } c = measure q;",
        422,
    )
    yield p(
        "ctrl(99999999)", Q3 + "qubit[2] q; bit c; ctrl(99999999) @ x q[0], q[1]; c = measure q[0];"
    )
    yield p("ctrl(-1)", Q3 + "qubit[2] q; bit c; ctrl(-1) @ x q[0], q[1]; c = measure q[0];")
    yield p("pow(1e99999)", Q3 + "qubit q; bit c; pow(1e99999) @ h q; c = measure q;")
    wide = ",".join(f"a{i}" for i in range(14))
    args = ",".join(f"q[{i}]" for i in range(14))
    yield p(
        "pow-wide-gate",
        Q3 + f"gate g {wide} {{ h a0; }} qubit[14] q; bit c; pow(2) @ g {args}; c = measure q[0];",
    )
    yield p("delay-huge", Q3 + "qubit q; bit c; delay[1e99999s] q; c = measure q;")
    yield p("shots-huge", BELL3, 422, shots=10**30)
    yield p("seed-huge", BELL3, 422, seed=2**64)
    # --- deep nesting ------------------------------------------------------------------
    for depth in (65, 1000, 100_000):
        yield p(
            f"parens-{depth}", Q3 + "qubit q; bit c; rz(" + "(" * depth + "1" + ")" * depth + ") q;"
        )
        yield p(f"unclosed-{depth}", Q3 + "qubit q; bit c; rz(" + "(" * depth)
        yield p(
            f"braces-{depth}",
            Q3 + "qubit q; bit c; " + "if (c == 1) { " * depth + "x q;" + "}" * depth,
        )
        yield p(
            f"brackets-{depth}", Q3 + "qubit q; bit c; x q" + "[" * depth + "0" + "]" * depth + ";"
        )
    yield p(
        "expr-chain", Q3 + "qubit q; bit c; rz(" + "+".join(["1"] * 5000) + ") q; c = measure q;"
    )
    yield p("neg-chain", Q3 + "qubit q; bit c; rz(" + "-" * 5000 + "1) q; c = measure q;")
    yield p("inv-chain", Q3 + "qubit q; bit c; " + "inv @ " * 5000 + "x q;")
    yield p(
        "ctrl-chain",
        Q3 + "qubit[2] q; bit c; " + "ctrl @ " * 2000 + "x q[0], q[1]; c = measure q[0];",
    )
    # --- very long programs -------------------------------------------------------------
    yield p("60k-statements", Q3 + "qubit q; bit c; " + "x q; " * 60_000, 422)
    yield p("one-huge-statement", Q3 + "qubit q; bit c; barrier " + ",".join(["q"] * 200_000) + ";")
    yield p("no-semicolons", "x" * 500_000)
    yield p("comment-only", "// " + "x" * 900_000)
    yield p("block-comment", "/*" + "*" * 900_000 + "*/")
    yield p("unterminated-comment", BELL3 + "/* " + "x" * 10_000)
    yield p("50k-empty-statements", Q3 + ";" * 50_000)
    yield p("measures-nothing", Q3 + "qubit q; bit c; x q;")
    yield p(
        "broadcast-bomb", Q3 + "qubit[1000] q; bit c; " + "h q; " * 40 + "c = measure q[0];", 422
    )
    yield p(
        "broadcast-bomb-2",
        Q2 + "qreg q[1000]; creg c[1]; " + "h q; " * 40 + "measure q[0] -> c[0];",
        422,
    )
    yield p("measure-broadcast", Q3 + "qubit[1000] q; bit[1000] c; c = measure q;", 422)
    # Long enough to reach the parse deadline (1.5 s in this system): the slow path, twice.
    slow = Q3 + "qubit[2] q; bit[2] c; " + "cx q[0], q[1]; " * 40_000 + "c = measure q;"
    yield p("parse-deadline-qasm3", slow, 422)
    yield p("parse-deadline-error-at-end", slow.replace("c = measure q;", "c = measure"), 400, 422)
    # --- includes ----------------------------------------------------------------------
    for target in (
        "/etc/passwd",
        "../../../../etc/passwd",
        "..\\..\\windows\\win.ini",
        "/dev/zero",
        "/dev/random",
        "/proc/self/environ",
        "file:///etc/passwd",
        "stdgates.inc/../../etc/passwd",
        "./stdgates.inc",
        "STDGATES.INC",
        "stdgates.inc\x00.txt",
        "qelib1.inc",
        "",
        "/etc//passwd",
        "http://127.0.0.1/x.inc",
        "stdgates.inc ",
    ):
        yield p(
            f'include3 "{target[:20]}"', f'OPENQASM 3.0; include "{target}"; ' + BELL3[24:], 400
        )
        yield p(
            f'include2 "{target[:20]}"', f'OPENQASM 2.0; include "{target}"; ' + BELL2[23:], 400
        )
    yield p("include-no-space", 'OPENQASM 2.0; include"/etc/passwd";', 400)
    yield p("include-single-quote", "OPENQASM 3.0; include '/etc/passwd';", 400)
    yield p("include-comment-between", "OPENQASM 3.0; include /* x */ '/etc/passwd';", 400)
    yield p("include-bare", "OPENQASM 3.0; include /etc/passwd;", 400)
    yield p("include-twice", 'OPENQASM 3.0; include "stdgates.inc"; include "stdgates.inc";')
    yield p("include-in-gate", Q3 + 'gate g a { include "/etc/passwd"; } qubit q;', 400)
    # --- recursive and exponential gate definitions ------------------------------------
    yield p(
        "self-recursive-gate", Q3 + "gate g a { g a; } qubit q; bit c; g q; c = measure q;", 400
    )
    yield p(
        "mutual-recursion", Q3 + "gate f a { g a; } gate g a { f a; } qubit q; bit c; f q;", 400
    )
    yield p("self-recursive-gate-2", Q2 + "gate g a { g a; } qreg q[1]; creg c[1]; g q[0];", 400)
    chain = "gate g0 a { " + "x a; " * 10 + "} "
    chain += " ".join(f"gate g{i} a {{ " + f"g{i - 1} a; " * 10 + "}" for i in range(1, 9))
    yield p("exponential-gates-3", Q3 + chain + " qubit q; bit c; g8 q; c = measure q;", 422)
    yield p(
        "exponential-gates-2", Q2 + chain + " qreg q[1]; creg c[1]; g8 q[0]; measure q -> c;", 422
    )
    yield p("redefine-h", Q3 + "gate h a { x a; } qubit q; bit c; h q; c = measure q;", 400)
    yield p(
        "def-recursion", Q3 + "def f(qubit a) { f(a); } qubit q; bit c; f(q); c = measure q;", 400
    )
    yield p(
        "gate-1000-params", Q3 + "gate g(" + ",".join(f"p{i}" for i in range(1000)) + ") a { x a; }"
    )
    # --- parser exceptions -------------------------------------------------------------
    for name, source in {
        "empty": "",
        "spaces": " \n\t ",
        "version-4": "OPENQASM 4.0; qubit q;",
        "version-huge": "OPENQASM 99999999999999999999999; qubit q;",
        "version-only": "OPENQASM 3.0;",
        "missing-semicolon": Q3 + "qubit q bit c",
        "unterminated-string": 'OPENQASM 3.0; include "stdgates.inc',
        "measure-nothing-to": Q3 + "qubit q; bit c; c = measure;",
        "measure-undeclared": Q3 + "qubit q; c = measure q;",
        "index-error": Q3 + "qubit[2] q; bit[2] c; c = measure q[5];",
        "measure-arrow-3": Q3 + "qubit q; bit c; measure q -> c[7];",
        "gate-args-type": Q3 + "qubit q; bit c; rz q; c = measure q;",
        "too-many-params": Q3 + "qubit q; bit c; h(1, 2, 3) q; c = measure q;",
        "string-as-angle": Q3 + 'qubit q; bit c; rz("a") q; c = measure q;',
        "bit-init": Q3 + "qubit q; bit c = 1; c = measure q;",
        "bool-condition": Q3 + "qubit q; bit c; if (true) x q; c = measure q;",
        "while-true": Q3 + "qubit q; bit c; while (true) { x q; } c = measure q;",
        "defcal": Q3 + 'defcalgrammar "openpulse"; defcal x q { } qubit q;',
        "extern": Q3 + "extern f(int) -> int; qubit q;",
        "alias-huge": Q3 + "qubit[2] q; let a = q[99999999]; bit c; c = measure a;",
        "slice-step-0": Q3 + "qubit[2] q; bit[2] c; x q[0:0:1]; c = measure q[0:99999999:0];",
        "physical-qubit": Q3 + "bit c; x $99999999; c = measure $99999999;",
        "input-angle": Q3 + "input angle a; qubit q; bit c; rz(a) q; c = measure q;",
        "output": Q3 + "output bit c; qubit q; c = measure q;",
        "same-qubit-twice": Q3 + "qubit q; bit c; cx q, q; c = measure q;",
        "qasm2-opaque": Q2 + "opaque o a; qreg q[1]; creg c[1]; o q[0]; measure q -> c;",
        "qasm2-cx-same": Q2 + "qreg q[1]; creg c[1]; CX q[0],q[0]; measure q -> c;",
        "qasm2-in-qasm3": "OPENQASM 3.0;\n" + BELL2[14:],
        "qasm3-in-qasm2": "OPENQASM 2.0;\n" + BELL3[14:],
        "binary-junk": "".join(chr(i) for i in range(32, 127)) * 10,
        "python": "import os; os.system('id')",
        "json-in-json": json.dumps({"quantum_circuit": BELL3}),
        "html": "<script>alert(1)</script>",
        "sql": "'; DROP TABLE tasks; --",
        "format-string": "%s%s%s%n{0}{__class__}",
        "nul": BELL3.replace("h q[0];", "h q[0];\x00"),
        "nul-in-comment": "// \x00\n" + BELL3,
        "control-chars": BELL3.replace(";", ";\x01\x02\x1b[31m"),
        "del-char": BELL3.replace("h q[0];", "h q[0];\x7f"),
        "lone-surrogate": "// \ud800\n" + BELL3,
        "lone-surrogate-code": BELL3.replace("h q[0];", "h q[\udfff];"),
        "bom": "\ufeff" + BELL3,
        "zero-width-space": BELL3.replace("h q[0]", "h\u200b q[0]"),
        "rtl-override": BELL3.replace("h q[0];", "h\u202e q[0];"),
        "hardware-qubit-huge": Q3 + "bit c; x $99999999; c = measure $99999999;",
        "input-parameter": Q3 + "input angle a; qubit q; bit c; rz(a) q; c = measure q;",
        "box-infinite": Q3 + "qubit q; bit c; box[1e99999s] { x q; } c = measure q;",
        "cyrillic-o-openqasm": BELL3.replace("OPENQASM", "\u041ePENQASM"),
        "fullwidth-semicolon": BELL3.replace(";", "\uff1b"),
        "greek-question-mark": BELL3.replace(";", "\u037e"),
        "cyrillic-h-gate": BELL3.replace("h q[0];", "\u04bb q[0];"),
        "fullwidth-digits": BELL3.replace("qubit[2]", "qubit[\uff12]"),
        "superscript-digit": BELL3.replace("qubit[2]", "qubit[\u00b2]"),
        "arabic-digits": BELL3.replace("qubit[2]", "qubit[\u0662]"),
        "nbsp": BELL3.replace(" ", "\u00a0"),
        "emoji-identifier": BELL3.replace("q", "\U0001f4a5"),
        "homoglyph-include": 'OPENQASM 3.0; include "stdgates\u2024inc"; qubit q;',
    }.items():
        yield p(name, source)
    # --- one short statement, exponential work (issue 13) -------------------------------
    # Each made qiskit build a dense matrix or synthesise thousands of gates in one call
    # (ctrl(7) @ pow(0.5) @ x: 39.8 s on the event loop); refused before it is built.
    args = {n: ", ".join(f"q[{i}]" for i in range(n)) for n in (7, 8, 9, 401)}
    for name, statement in {
        "ctrl7-pow": f"ctrl(7) @ pow(0.5) @ x {args[8]}",
        "ctrl8-pow": f"ctrl(8) @ pow(0.5) @ x {args[9]}",
        "ctrl-pow-gphase": f"ctrl(8) @ pow(0.5) @ gphase(0.1) {args[8]}",
        "negctrl7-pow": f"negctrl(7) @ pow(0.25) @ h {args[8]}",
        "inv-ctrl-ctrl-pow": f"inv @ ctrl(3) @ ctrl(3) @ pow(0.5) @ x {args[7]}",
        "ctrl400-h": f"ctrl(400) @ h {args[401]}",
    }.items():
        yield p(name, Q3 + f"qubit[401] q; bit c; {statement}; c = measure q[0];", 422)
    yield p(
        "gate-def-ctrl-pow",
        Q3
        + "gate g a,b,c,d,e,f,h,i { ctrl(7) @ pow(0.5) @ x a,b,c,d,e,f,h,i; } "
        + f"qubit[8] q; bit c; g {args[8]}; c = measure q[0];",
        422,
    )
    # Each call of g13 copies a 16384-gate definition (~1 s): killed at the deadline.
    chain = "gate g0 a { x a; x a; } " + " ".join(
        f"gate g{i} a {{ g{i - 1} a; g{i - 1} a; }}" for i in range(1, 14)
    )
    yield p("gate-chain-calls", Q3 + chain + " qubit q; bit c; g13 q; g13 q; g13 q;", 422)


def bodies() -> Iterator[Hostile]:
    def raw(name: str, body: bytes, *expect: int, **kw: object) -> Hostile:
        return Hostile(f"body/{name}", body, expect=expect, **kw)  # type: ignore[arg-type]

    bell = json.dumps(BELL3)
    yield raw("invalid-utf8", b'{"quantum_circuit": "\xff\xfe\xfd"}', 422)
    yield raw("utf8-overlong", b'{"quantum_circuit": "\xc0\xaf"}', 422)
    yield raw("utf16", json.dumps({"quantum_circuit": BELL3}).encode("utf-16"), 422)
    yield raw("latin1", '{"quantum_circuit": "caf\xe9"}'.encode("latin-1"), 422)
    yield raw("empty", b"", 422)
    yield raw("whitespace", b"   \n", 422)
    for name, text in {
        "null": "null",
        "true": "true",
        "number": "42",
        "string": '"hello"',
        "list": "[]",
        "list-of-body": f'[{{"quantum_circuit": {bell}}}]',
        "xml": "<task/>",
        "form": "quantum_circuit=x&shots=1",
        "nan": '{"quantum_circuit": "x", "shots": NaN}',
        "infinity": '{"quantum_circuit": "x", "shots": Infinity}',
        "trailing-garbage": f'{{"quantum_circuit": {bell}}} xyz',
        "two-objects": f'{{"quantum_circuit": {bell}}}{{"shots": 1}}',
        "single-quotes": "{'quantum_circuit': 'x'}",
        "comment": f'{{"quantum_circuit": {bell} /* x */}}',
        "unterminated": '{"quantum_circuit": "x',
        "bom-json": "\ufeff" + json.dumps({"quantum_circuit": BELL3}),
        "escaped-surrogate": '{"quantum_circuit": "\\ud800'
        + BELL3.replace('"', '\\"').replace("\n", "\\n")
        + '"}',
        "huge-int-digits": '{"quantum_circuit": "x", "shots": ' + "9" * 5000 + "}",
        "huge-exponent": '{"quantum_circuit": "x", "shots": 1e999999999}',
        "deep-array": "[" * 200_000 + "]" * 200_000,
        "deep-object": '{"a":' * 100_000 + "1" + "}" * 100_000,
        "deep-in-field": '{"quantum_circuit": ' + "[" * 100_000 + "]" * 100_000 + "}",
        "dup-keys": f'{{"quantum_circuit": {bell}, "shots": 1, "shots": -5}}',
        "many-keys": "{" + ",".join(f'"k{i}": {i}' for i in range(50_000)) + "}",
    }.items():
        yield raw(name, text.encode("utf-8", "surrogatepass"))
    wrong = {
        "circuit-int": {"quantum_circuit": 5},
        "circuit-null": {"quantum_circuit": None},
        "circuit-list": {"quantum_circuit": [BELL3]},
        "circuit-dict": {"quantum_circuit": {"x": BELL3}},
        "circuit-bool": {"quantum_circuit": True},
        "missing-circuit": {"shots": 5},
        "shots-string": {"quantum_circuit": BELL3, "shots": "5"},
        "shots-bool": {"quantum_circuit": BELL3, "shots": True},
        "shots-zero": {"quantum_circuit": BELL3, "shots": 0},
        "shots-negative": {"quantum_circuit": BELL3, "shots": -1},
        "shots-fraction": {"quantum_circuit": BELL3, "shots": 1.5},
        "shots-null": {"quantum_circuit": BELL3, "shots": None},
        "shots-list": {"quantum_circuit": BELL3, "shots": [1]},
        "shots-over": {"quantum_circuit": BELL3, "shots": 100_001},
        "seed-negative": {"quantum_circuit": BELL3, "seed": -1},
        "seed-string": {"quantum_circuit": BELL3, "seed": "7"},
        "seed-float": {"quantum_circuit": BELL3, "seed": 0.5},
        "memory-string": {"quantum_circuit": BELL3, "memory": "yes"},
        "memory-int": {"quantum_circuit": BELL3, "memory": 0},
        "memory-null": {"quantum_circuit": BELL3, "memory": None},
    }
    for name, value in wrong.items():
        yield raw(name, json.dumps(value).encode(), 422)
    # Oversized: refused before it is read whole, declared or streamed.
    big = json.dumps({"quantum_circuit": "x" * (MIB + 10)}).encode()
    yield raw("over-1MiB", big, 413)
    yield raw("8MiB", b"{" + b" " * (8 * MIB) + b"}", 413)
    yield Hostile("body/chunked-over-1MiB", big, headers={"x-stream": "1"}, expect=(413,))
    yield raw(
        "content-length-lie",
        json.dumps({"quantum_circuit": BELL3}).encode(),
        413,
        headers={"content-length": str(50 * MIB), "x-raw": "1"},
    )
    yield raw(
        "content-type-xml",
        json.dumps({"quantum_circuit": "x"}).encode(),
        415,
        headers={"content-type": "application/xml"},
    )
    # The same through /batches.
    yield Hostile("batch/empty", b'{"tasks": []}', path="/batches", expect=(422,))
    yield Hostile("batch/not-a-list", b'{"tasks": {"a": 1}}', path="/batches", expect=(422,))
    yield Hostile("batch/null", b'{"tasks": null}', path="/batches", expect=(422,))
    yield Hostile(
        "batch/deep", b'{"tasks": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", path="/batches"
    )
    too_many = json.dumps({"tasks": [{"quantum_circuit": BELL3}] * 1001}).encode()
    yield Hostile("batch/1001-tasks", too_many, path="/batches", expect=(422,))
    # One bad task in a batch: the good ones before it must not be queued either.
    mixed = [{"quantum_circuit": BELL3}] * 5 + [{"quantum_circuit": Q3 + "qubit[99999999] q;"}]
    yield Hostile(
        "batch/last-one-bad", json.dumps({"tasks": mixed}).encode(), path="/batches", expect=(422,)
    )
    mixed = [{"quantum_circuit": BELL3}, {"quantum_circuit": "// \ud800\n" + BELL3}]
    yield Hostile(
        "batch/surrogate", json.dumps({"tasks": mixed}).encode(), path="/batches", expect=(400,)
    )
    mixed = [{"quantum_circuit": BELL3}] * 3 + [{"quantum_circuit": BELL3, "shots": "3"}]
    yield Hostile(
        "batch/wrong-type", json.dumps({"tasks": mixed}).encode(), path="/batches", expect=(422,)
    )
    yield Hostile(
        "batch/many-bombs",
        json.dumps(
            {
                "tasks": [
                    {
                        "quantum_circuit": Q3
                        + "qubit[1000] q; bit c; "
                        + "h q; " * 30
                        + "c = measure q[0];"
                    }
                ]
                * 50
            }
        ).encode(),
        path="/batches",
        # 400 (it measures nothing) or 422 (its gates): refused either way, before parsing
        # all fifty.
        expect=(400, 422),
    )


PARAM3 = Q3 + "input float[64] theta;\nqubit[2] q;\nbit[2] c;\nry(theta) q[0];\nc = measure q;\n"
EST3 = Q3 + "input float[64] theta;\nqubit[2] q;\nry(theta) q[0];\ncx q[0], q[1];\n"


def wide(n: int) -> str:
    return Q3 + f"qubit[{n}] q; bit[{n}] c; h q[0]; t q[0]; cx q[0], q[1]; c = measure q;"


def workloads() -> Iterator[Hostile]:
    """Sweeps, observables, methods, precisions and noise: every bad one is a 4xx that
    queues nothing, including the ones too big to parse cheaply."""
    p = Hostile.program

    def raw(name: str, body: bytes, *expect: int) -> Hostile:
        return Hostile(f"workload/{name}", body, expect=expect)

    head = json.dumps({"quantum_circuit": PARAM3})[:-1].encode()
    for token in (b"NaN", b"Infinity", b"-Infinity", b"1e999", b"[1, NaN]"):
        yield raw(
            f"theta={token.decode()}", head + b', "parameters": {"theta": ' + token + b"}}", 422
        )
    yield raw("theta=true", head + b', "parameters": {"theta": true}}', 422)
    # 10**7 bindings: 20 MB, refused before it is read whole.
    yield raw("1e7-bindings", head + b', "parameters": {"theta": [' + b"0," * 10**7 + b"0]}}", 413)
    yield raw("1e5-bindings", head + b', "parameters": {"theta": [' + b"0," * 10**5 + b"0]}}", 422)
    yield raw(
        "1e5-binding-maps",
        head + b', "parameters": [' + b'{"theta":0},' * 60_000 + b'{"theta":0}]}',
        422,
    )
    ragged = {"theta": [[0.1, 0.2], [0.3]]}
    yield p("workload/ragged-sweep", PARAM3, 422, parameters=ragged)
    yield p("workload/missing-parameter", PARAM3, 422)
    yield p("workload/extra-parameter", PARAM3, 422, parameters={"theta": 1, "phi": 2})
    yield p("workload/parameters-without-any", BELL3, 422, parameters={"theta": 1})
    deep = "[" * 100 + "0" + "]" * 100
    yield raw("deep-sweep", head + b', "parameters": {"theta": ' + deep.encode() + b"}}", 422)
    # A 10**6-term observable is 14 MB; 80000 terms fit in a body and are over the limit.
    est = json.dumps({"quantum_circuit": EST3})[:-1].encode()
    yield raw(
        "1e6-terms", est + b', "observables": [' + b'["ZZ", 1.0],' * 10**6 + b'["ZZ", 1]]}', 413
    )
    yield raw(
        "8e4-terms", est + b', "observables": [' + b'["ZZ", 1.0],' * 80_000 + b'["ZZ", 1]]}', 422
    )
    yield p(
        "workload/observable-too-wide", EST3, 422, parameters={"theta": 0}, observables=[["ZZZ", 1]]
    )
    yield p(
        "workload/observable-not-pauli", EST3, 422, parameters={"theta": 0}, observables=[["AB", 1]]
    )
    yield p(
        "workload/observable-complex",
        EST3,
        422,
        parameters={"theta": 0},
        observables=[["ZZ", [1, 1]]],
    )
    no_broadcast = {"theta": [0.1, 0.2, 0.3]}
    obs = [[["ZZ", 1]], [["XX", 1]]]
    yield p("workload/no-broadcast", EST3, 422, parameters=no_broadcast, observables=obs)
    yield p("workload/precision-without-observables", BELL3, 422, precision=0.01)
    yield p("workload/precision-half", BELL3, 422, precision="half")
    yield p(
        "workload/precision-negative",
        EST3,
        422,
        parameters={"theta": 0},
        observables=[["ZZ", 1]],
        precision=-1,
    )
    # Methods Aer lacks (or this service does not offer), and options they cannot honour.
    for method in ("unitary", "superop", "tensor_network", "gpu", "", "STATEVECTOR"):
        yield p(f"workload/method={method!r}", BELL3, 422, method=method)
    yield p("workload/stabilizer-non-clifford", wide(2), 422, method="stabilizer")
    yield p("workload/stabilizer-single", BELL3, 422, method="stabilizer", precision="single")
    yield p(
        "workload/extended-stabilizer-evs",
        EST3,
        422,
        parameters={"theta": 0},
        observables=[["ZZ", 1]],
        method="extended_stabilizer",
    )
    # Qubits over each method's own limit.
    yield p("workload/density-matrix-20", wide(20), 422, method="density_matrix")
    yield p("workload/statevector-30", wide(30), 422, method="statevector")
    yield p("workload/mps-200", wide(200), 422, method="matrix_product_state")
    yield p("workload/extended-stabilizer-64", wide(64), 422, method="extended_stabilizer")
    # Noise as data: probabilities outside [0, 1], unknown keys and gates, too many gates.
    for noise in (
        {"depolarizing_1q": 2},
        {"depolarizing_2q": -0.5},
        {"readout": 1.0000001},
        {"readout": "0.1"},
        {"depol": 0.1},
        {"gates": {"ccx": 0.1}},
        {"gates": {"CX": 0.1}},
        {"gates": {f"g{i}": 0.1 for i in range(65)}},
        {"gates": {"cx": 2}},
        [0.1],
    ):
        yield p(f"workload/noise={json.dumps(noise)[:40]}", BELL3, 422, noise=noise)
    # A sweep that would make a huge answer: every shot kept, over every binding.
    yield p(
        "workload/memory-sweep",
        PARAM3,
        422,
        shots=100_000,
        memory=True,
        parameters={"theta": [0.0] * 10},
    )
    yield p("workload/shots-sweep", PARAM3, 422, shots=100_000, parameters={"theta": [0.0] * 1000})
    # Unknown fields are refused, never dropped.
    yield p("workload/unknown-field", BELL3, 422, methd="density_matrix")
    yield p("workload/unknown-field-in-noise", BELL3, 422, noise={"readout": 0.1, "bias": 1})
    unknown_in_batch = {"tasks": [{"quantum_circuit": BELL3}, {"quantum_circuit": BELL3, "x": 1}]}
    yield Hostile(
        "workload/batch-unknown",
        json.dumps(unknown_in_batch).encode(),
        path="/batches",
        expect=(422,),
    )
    yield Hostile(
        "workload/batch-top-level",
        json.dumps({"tasks": [{"quantum_circuit": BELL3}], "shots": 5}).encode(),
        path="/batches",
        expect=(422,),
    )


def headers_ids_and_paths() -> Iterator[Hostile]:
    bad = json.dumps({"quantum_circuit": "nope"}).encode()
    for name, value in {
        "idem-non-ascii": b"\xff\xfe",
        "idem-8k": b"k" * 8000,
        "idem-quotes": b"\"'`$(id)",
    }.items():
        yield Hostile(f"header/{name}", bad, headers={"Idempotency-Key": value}, expect=(400,))
    yield Hostile(
        "header/auth-non-ascii", bad, headers={"Authorization": b"Bearer \xe9\xe9"}, expect=(400,)
    )
    for name, header in (("auth", "Authorization"), ("idem", "Idempotency-Key")):
        padded: dict[str, str | bytes] = {header: b"  x  ", "x-raw": "1"}
        yield Hostile(f"header/{name}-padded", bad, headers=padded, expect=(400,))
    yield Hostile("header/auth-basic", bad, headers={"Authorization": "Basic YTpi"}, expect=(400,))
    for task_id in (
        "not-a-uuid",
        "%00",
        "%2e%2e",
        "%2e%2e%2fhealth",
        "5b8e3f4e-0000-4000-8000-00000000000",
        "5b8e3f4e000040008000000000000000",
        "urn:uuid:5b8e3f4e-0000-4000-8000-000000000000",
        "{5b8e3f4e-0000-4000-8000-000000000000}",
        "%ff%fe",
        "x" * 5000,
        "*",
        "' OR 1=1 --",
        "qmill:task:*",
        "%0d%0aSet-Cookie:x=1",
    ):
        yield Hostile(f"id/get {task_id[:20]}", None, "GET", f"/tasks/{task_id}", expect=(404,))
        yield Hostile(
            f"id/delete {task_id[:20]}", None, "DELETE", f"/tasks/{task_id}", expect=(404,)
        )
        yield Hostile(f"id/batch {task_id[:20]}", None, "GET", f"/batches/{task_id}", expect=(404,))
        drawing = f"/tasks/{task_id}/diagram.txt"
        yield Hostile(f"id/diagram {task_id[:20]}", None, "GET", drawing, expect=(404,))
        for kind in ("task", "batch"):  # an event stream of nobody's id ends at once
            events = f"/events?{kind}={task_id}"
            yield Hostile(f"id/events-{kind} {task_id[:20]}", None, "GET", events, expect=(404,))
    missing = "/tasks/5b8e3f4e-0000-4000-8000-000000000000"
    nobody = "5b8e3f4e-0000-4000-8000-000000000000"
    for name, query in {
        "none": "",
        "both": f"?task={nobody}&batch={nobody}",
        "twice": f"?task={nobody}&task={nobody}",
        "empty": "?task=",
        "unknown": f"?task={nobody}&since=0",
    }.items():
        yield Hostile(f"events/query-{name}", None, "GET", f"/events{query}", expect=(422,))
    for name, value in {"text": "x", "negative": "-1", "huge": "9" * 40, "float": "1.5"}.items():
        header: dict[str, str | bytes] = {"Last-Event-ID": value}
        path = f"/events?task={nobody}"
        yield Hostile(f"events/last-event-id-{name}", None, "GET", path, header, (422,))
    for wait in ("nan", "inf", "-inf", "-1", "1e999", "abc", "", "0x10", "1_0000000000", "%00"):
        yield Hostile(f"wait={wait}", None, "GET", f"{missing}?wait={wait}", expect=(404, 422))
    yield Hostile(
        "include=x*1000", None, "GET", f"{missing}?include={'circuit,' * 1000}", expect=(404,)
    )
    for path in (
        "/etc/passwd",
        "/../../etc/passwd",
        "/tasks/../health/x",
        "/tasks//",
        "/TASKS",
        "/tasks.json",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/admin",
        "/tasks/a/b/c",
        "/batches/",
        "/openapi.json/x",
        "/metrics",
    ):
        yield Hostile(f"path/{path}", None, "GET", path, expect=(404,))
    for method in ("PUT", "PATCH", "TRACE", "PROPFIND", "OPTIONS"):
        yield Hostile(f"method/{method} /tasks", b"{}", method, "/tasks", expect=(405,))
    yield Hostile("method/PUT /tasks/id", b"{}", "PUT", missing, expect=(405,))
    yield Hostile("method/POST /health", b"{}", "POST", "/health", expect=(405,))
    yield Hostile("method/DELETE /batches", None, "DELETE", "/batches", expect=(405,))
    # Query parameters an operation does not take are refused, not ignored.
    yield Hostile("query/unknown", None, "GET", f"{missing}?shots=5", expect=(422,))
    yield Hostile(
        "query/include-unknown", None, "GET", f"{missing}?include=everything", expect=(422,)
    )
    yield Hostile("query/health", None, "GET", "/health?verbose=1", expect=(422,))
    diagram = f"{missing}/diagram.txt"
    yield Hostile("query/diagram", None, "GET", f"{diagram}?wait=5", expect=(422,))
    yield Hostile("method/POST diagram", b"{}", "POST", diagram, expect=(405,))
    yield Hostile("method/DELETE diagram", None, "DELETE", diagram, expect=(405,))
    yield Hostile("path/diagram.txt/x", None, "GET", f"{diagram}/x", expect=(404,))
    yield Hostile("query/backend", None, "GET", "/backend?x=1", expect=(422,))
    yield from cross_site()


def cross_site() -> Iterator[Hostile]:
    """What a web page of another site can send: a body of a type it may send without a
    CORS preflight (415), a Host of its own after DNS rebinding (421), and its Origin on
    a request that changes state (403). Each body is a valid program: only the request's
    envelope is wrong, and nothing may be queued."""
    good = json.dumps({"quantum_circuit": BELL3}).encode()
    batch = json.dumps({"tasks": [{"quantum_circuit": BELL3}]}).encode()
    for name, value in {
        "text-plain": "text/plain",
        "text-plain-charset": "text/plain;charset=UTF-8",
        "form": "application/x-www-form-urlencoded",
        "multipart": "multipart/form-data; boundary=x",
        "text-json": "text/json",
        "json-patch": "application/json-patch+json",
        "jsonx": "application/jsonx",
        "empty": "",
    }.items():
        yield Hostile(
            f"cross-site/type-{name}", good, headers={"content-type": value}, expect=(415,)
        )
    yield Hostile(
        "cross-site/type-missing", good, headers={"x-no-content-type": "1"}, expect=(415,)
    )
    yield Hostile(
        "cross-site/batch-text-plain",
        batch,
        path="/batches",
        headers={"content-type": "text/plain"},
        expect=(415,),
    )
    missing = "/tasks/5b8e3f4e-0000-4000-8000-000000000000"
    for host in ("evil.example", "evil.example:8000", "localhost.evil.example", "127.0.0.1.nip.io"):
        rebound = {"host": host}
        yield Hostile(f"cross-site/host-post {host}", good, headers=rebound, expect=(421,))
        yield Hostile(f"cross-site/host-get {host}", None, "GET", missing, rebound, (421,))
    for path in ("/", "/health", "/backend", "/openapi.json", "/batches/x"):
        evil = {"host": "evil.example"}
        yield Hostile(f"cross-site/host{path}", None, "GET", path, evil, expect=(421,))
    for origin in ("https://evil.example", "http://localhost.evil.example:8000", "null", "x"):
        foreign = {"origin": origin}
        yield Hostile(f"cross-site/origin-post {origin}", good, headers=foreign, expect=(403,))
        yield Hostile(
            f"cross-site/origin-batch {origin}",
            batch,
            path="/batches",
            headers=foreign,
            expect=(403,),
        )
        yield Hostile(
            f"cross-site/origin-delete {origin}", None, "DELETE", missing, foreign, (403,)
        )


def listing() -> Iterator[Hostile]:
    """``GET /tasks`` and tags (issue 14): tampered cursors (Redis range syntax, a
    member's shape with junk, 100 KB), absurd limits, dates that are not RFC 3339, tags
    that no task could have; and submits with too many or malformed tags, up to 10^6 of
    them (the body limit refuses that before any parsing). With auth off there is no
    other tenant: cross-tenant batch ids are tests/e2e/test_auth.py's."""
    member = "0" * 20 + "5b8e3f4e-0000-4000-8000-000000000000"
    for number, cursor in enumerate(
        (
            "x",
            "-",
            "+",
            "(",
            "[" + member,
            "(" + member,
            member + "x",
            member.upper(),
            member[:-1],
            "%00" + member,
            "' OR 1=1 --",
            "a" * 20_000,
        )
    ):
        yield Hostile(f"list/cursor-{number}", None, "GET", f"/tasks?cursor={cursor}")
    for limit in ("0", "-1", "101", "1e9", "9" * 30, "abc", "", "1.0", "%D9%A3", "0x10"):
        yield Hostile(
            f"list/limit={limit[:12]}", None, "GET", f"/tasks?limit={limit}", expect=(422,)
        )
    for since in ("", "yesterday", "2026-12-03T10:00:00", "2026-02-30T00:00:00Z", "9" * 100):
        yield Hostile(
            f"list/since={since[:20]}", None, "GET", f"/tasks?since={since}", expect=(422,)
        )
    for query in (
        "status=done",
        "status=",
        "status=PENDING",
        "tag=",
        "tag=k",
        "tag=:v",
        "tag=k:%07",
        "tag=k%20x:v",
        "&".join(f"tag=k{i}:v" for i in range(17)),
        f"tag={'k' * 65}:v",
        f"tag=k:{'v' * 257}",
        "batch=not-a-uuid",
        "batch=qmill:batch:*",
        "batch=5b8e3f4e000040008000000000000000",
        "batch=5b8e3f4e-0000-4000-8000-000000000000&batch=5b8e3f4e-0000-4000-8000-000000000001",
        "owner=anonymous",
    ):
        yield Hostile(f"list/{query[:40]}", None, "GET", f"/tasks?{query}", expect=(422,))
    for name, tags in {
        "17": {f"k{i}": "v" for i in range(17)},
        "60k": {f"k{i}": "" for i in range(60_000)},
        "key-colon": {"a:b": "v"},
        "key-space": {"a b": "v"},
        "key-65": {"k" * 65: "v"},
        "value-257": {"k": "v" * 257},
        "value-control": {"k": "\x1b[31m"},
        "value-surrogate": {"k": "\ud800"},
        "not-strings": {"k": 1},
    }.items():
        expect = (413,) if len(json.dumps(tags)) > MIB else (422,)
        yield Hostile.program(f"tags-{name}", BELL3, *expect, tags=tags)
    million = b'{"quantum_circuit": "x", "tags": {' + b",".join(
        b'"k%d": ""' % i for i in range(1_000_000)
    )
    yield Hostile("tags/10^6", million + b"}}", headers={"x-stream": "1"}, expect=(413,))
    batch = {"tasks": [{"quantum_circuit": BELL3, "tags": {f"k{i}": "" for i in range(20)}}]}
    yield Hostile("tags/batch-20", json.dumps(batch).encode(), path="/batches", expect=(422,))


def gateway_limits() -> Iterator[Hostile]:
    """What the gateway refuses before any function: a head over 32 KiB (431; it once took
    100 MB headers whole), and an encoded "/" in a path, which routers disagree on.
    (Dot segments, ``/tasks/..``, are tests/e2e/test_gateway_limits.py's: httpx itself
    turns them into another path, so this document check cannot follow them.)"""
    bad = json.dumps({"quantum_circuit": "nope"}).encode()
    yield Hostile("gateway/header-48k", bad, headers={"X-Pad": "a" * 48_000}, expect=(431,))
    many = {f"X-H{i}": "b" * 100 for i in range(400)}
    yield Hostile("gateway/400-headers", bad, headers=many, expect=(431,))
    raw: dict[str, str | bytes] = {"x-raw": "1"}
    for path in ("/tasks/a%2Fb", "/batches/x%2f..%2fy", "/tasks/x%2F..%2F..%2Fhealth"):
        yield Hostile(f"gateway/path {path}", None, "GET", path, headers=raw, expect=(404,))


def mutations(count: int, seed: int = 6) -> Iterator[Hostile]:
    """Seeded random edits of valid programs, each confirmed locally to be refused."""
    rng = random.Random(seed)
    pieces = [
        ";",
        "[",
        "]",
        "(",
        ")",
        "{",
        "}",
        ",",
        "->",
        "@",
        "q",
        "c",
        "99999999999",
        "-1",
        "1e99999",
        "measure",
        "gate",
        "include",
        '"',
        "/*",
        "//",
        "\n",
        "\x00",
        "\ud800",
        "qubit[",
        "inv @",
        "ctrl(999) @",
        "for int i in [0:999999999] {",
        "OPENQASM 2.0;",
    ]
    settings = Settings()
    made = 0
    attempts = 0
    while made < count and attempts < count * 20:
        attempts += 1
        source = list(rng.choice([BELL3, BELL2, GHZ3]))
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(source) + 1)
            roll = rng.random()
            if roll < 0.4 and source:
                del source[at : at + rng.randint(1, 8)]
            elif roll < 0.8:
                source[at:at] = list(rng.choice(pieces))
            else:
                start = rng.randrange(len(source))
                source[at:at] = source[start : start + rng.randint(1, 30)] * rng.randint(2, 50)
        program = "".join(source)
        try:
            validate_submit({"quantum_circuit": program}, settings)
        except RequestError:
            made += 1
            yield Hostile.program(f"mutant-{made}", program)


def whole_batches() -> Iterator[Hostile]:
    """Issue 14's batch operations: ids and waits that name no batch, seeds and tags out
    of bounds, hostile Idempotency-Keys. (Another tenant's batch: tests/e2e/test_auth.py.)"""
    missing = "/batches/5b8e3f4e-0000-4000-8000-000000000000"
    for batch_id in ("5b8e3f4e-0000-4000-8000-000000000000", "not-a-uuid", "%2e%2e", "x" * 5000):
        path = f"/batches/{batch_id}"
        yield Hostile(f"batch/delete {batch_id[:20]}", None, "DELETE", path, expect=(404,))
        # Answered at once, not after the wait: there is nothing to wait on.
        yield Hostile(f"batch/wait {batch_id[:20]}", None, "GET", f"{path}?wait=300", expect=(404,))
    for wait in ("nan", "inf", "-1", "1e999", "abc"):
        yield Hostile(f"batch/wait={wait}", None, "GET", f"{missing}?wait={wait}", expect=(422,))
    yield Hostile("batch/query-unknown", None, "GET", f"{missing}?status=x", expect=(422,))
    yield Hostile("batch/delete-query", None, "DELETE", f"{missing}?wait=1", expect=(422,))
    one = [{"quantum_circuit": BELL3}]
    many = [{"quantum_circuit": BELL3}] * 3
    for name, extra in {
        "seed-overflow": {"tasks": many, "seed": 2**63 - 2},
        "seed-over-max": {"tasks": one, "seed": 2**63},
        "seed-negative": {"tasks": one, "seed": -1},
        "seed-string": {"tasks": one, "seed": "5"},
        "seed-float": {"tasks": one, "seed": 1.5},
        "tags-list": {"tasks": one, "tags": ["a"]},
        "tags-colon-key": {"tasks": one, "tags": {"a:b": "c"}},
        "tags-empty-key": {"tasks": one, "tags": {"": "c"}},
        "tags-control": {"tasks": one, "tags": {"a": "x\u0000y"}},
        "tags-number": {"tasks": one, "tags": {"a": 1}},
        "tags-17": {"tasks": one, "tags": {f"k{i}": "v" for i in range(17)}},
        "tags-50k": {"tasks": one, "tags": {f"k{i}": "" for i in range(50_000)}},
        "tags-long-value": {"tasks": one, "tags": {"k": "v" * 100_000}},
        "tags-long-key": {"tasks": one, "tags": {"k" * 10_000: "v"}},
    }.items():
        body = json.dumps(extra).encode()
        yield Hostile(f"batch/{name}", body, path="/batches", expect=(422,))
    bad = json.dumps({"tasks": [{"quantum_circuit": "nope"}]}).encode()
    for name, value in {"idem-non-ascii": b"\xff\xfe", "idem-8k": b"k" * 8000}.items():
        yield Hostile(
            f"batch/{name}", bad, path="/batches", headers={"Idempotency-Key": value}, expect=(400,)
        )


@cache  # built once (its mutations are each checked locally: seconds) for both tests
def corpus() -> list[Hostile]:
    return [
        *programs(),
        *bodies(),
        *workloads(),
        *headers_ids_and_paths(),
        *whole_batches(),
        *gateway_limits(),
        *listing(),
        *mutations(60),
    ]


# --- what must not change ---------------------------------------------------------------


def processes(system: System) -> set[tuple[int, float, str]]:
    """The system's processes, but for parse processes: a program that runs into the
    parse deadline has its parse process killed and replaced, by design (their zygote
    is counted)."""
    found = set()
    for proc in system.tree():
        try:
            if proc.name() == pool.CHILD_NAME:
                continue
            found.add((proc.pid, proc.create_time(), " ".join(proc.cmdline())[:80]))
        except psutil.Error:
            continue
    return found


def settled_processes(
    system: System, quiet: float = 3.0, limit: float = 60.0
) -> set[tuple[int, float, str]]:
    """The process tree once it has stopped changing for ``quiet`` seconds: the gateway
    answers before the worker has forked its simulation processes, and those appearing
    mid-run are not restarts."""
    deadline = time.monotonic() + limit
    found = processes(system)
    stable_since = time.monotonic()
    while time.monotonic() - stable_since < quiet and time.monotonic() < deadline:
        time.sleep(0.1)
        now = processes(system)
        if now != found:
            found, stable_since = now, time.monotonic()
    return found


def queued_and_recorded(system: System) -> tuple[int, list[str]]:
    """JetStream's last sequence number (every publish ever) and qmill's task-like keys."""

    async def last_sequence() -> int:
        import nats

        nc = await nats.connect(system.nats_url, connect_timeout=5)
        try:
            info = await nc.jetstream().stream_info(constants.STREAM_NAME)
            return int(info.state.last_seq)
        except NotFoundError:
            return 0
        finally:
            await nc.close()

    client = redis.Redis.from_url(system.redis_url)
    try:
        keys = sorted(
            key.decode()
            for prefix in ("task", "batch", "idem", "inflight")
            for key in client.scan_iter(f"{constants.REDIS_PREFIX}{prefix}:*")
        )
    finally:
        client.close()
    return asyncio.run(last_sequence()), keys


def rss_mb(system: System, target: str) -> float:
    """The largest resident set among the function's processes (gunicorn's and its workers')."""
    largest = 0.0
    for proc in system.tree():
        try:
            if f"--target {target}" in " ".join(proc.cmdline()):
                largest = max(largest, float(proc.memory_info().rss) / MIB)
        except psutil.Error:
            continue
    return largest


def send_raw(base_url: str, case: Hostile) -> httpx.Response:
    """For what httpx will not send (a Content-Length that lies, padded header values):
    the bytes over a socket, the answer read back into an httpx.Response and checked
    against the document here, since no httpx hook sees it."""
    url = httpx.URL(base_url)
    body = case.body or b""
    lines = [f"{case.method} {case.path} HTTP/1.1".encode(), f"Host: {url.host}".encode()]
    lines += [b"Connection: close", b"Content-Type: application/json"]
    if "content-length" not in case.headers:
        lines.append(f"Content-Length: {len(body)}".encode())
    for name, value in case.headers.items():
        if name != "x-raw":
            lines.append(
                name.encode() + b": " + (value if isinstance(value, bytes) else value.encode())
            )
    with socket.create_connection((url.host, url.port or 80), timeout=30) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    head, _, content = reply.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(line.split(": ", 1)) for line in header_lines]
    request = httpx.Request(case.method, base_url + case.path)
    status = int(status_line.split()[1])
    response = httpx.Response(status, headers=headers, content=content, request=request)
    problems = CONFORMANCE.check(response)
    assert not problems, f"{case.name}: {problems}"
    return response


def send(client: httpx.Client, case: Hostile) -> httpx.Response:
    if "x-raw" in case.headers:
        return send_raw(str(client.base_url).rstrip("/"), case)
    headers = dict(case.headers)
    content: bytes | Iterator[bytes] | None = case.body
    if headers.pop("x-stream", None) and case.body is not None:
        body = case.body
        content = iter([body[i : i + 65536] for i in range(0, len(body), 65536)])
    if case.body is not None and "content-type" not in headers:
        headers["content-type"] = "application/json"
    if headers.pop("x-no-content-type", None):
        headers.pop("content-type")
    request = client.build_request(case.method, case.path, content=content, headers=headers)
    return client.send(request)


@pytest.fixture(scope="module")
def hostile_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """The system as `make run` starts it (auth off, default limits), except that
    parsing is capped at 1.5 s so that the two programs built to run into the deadline
    (tens of seconds of parsing) cost the suite 3 s; the slowest other case parses in
    well under a second, and the deadline's answer is a 4xx too."""
    with running_system(
        tmp_path_factory.mktemp("hostile"),
        QMILL_LIMITS__MAX_PARSE_SECONDS="1.5",
        QMILL_WORKER__PROCESSES="1",
    ) as running:
        yield running


def test_the_corpus_is_big_and_varied() -> None:
    cases = corpus()
    assert len(cases) >= 200
    assert len({c.name for c in cases}) == len(cases), "names must be unique"


@pytest.mark.timeout(600)
def test_abuse_corpus(hostile_system: System) -> None:
    cases = corpus()
    with httpx.Client(base_url=hostile_system.url, timeout=60) as client:
        assert client.get("/health").status_code == 200
        # The first parses import qiskit; a gate definition starts the parse processes.
        for warm_up in (Q3 + "qubit q;", Q2 + "qreg q[1];", Q3 + "gate g a { x a; } qubit q;"):
            client.post("/tasks", json={"quantum_circuit": warm_up})
        before_processes = settled_processes(hostile_system)
        before_queue = queued_and_recorded(hostile_system)
        rss_before = rss_mb(hostile_system, "submit")
        latencies: list[tuple[float, str, int]] = []
        problems: list[str] = []
        for case in cases:
            started = time.perf_counter()
            response = send(client, case)
            elapsed = time.perf_counter() - started
            latencies.append((elapsed, case.name, response.status_code))
            status = response.status_code
            if not 400 <= status < 500 or (case.expect and status not in case.expect):
                problems.append(f"{case.name}: {status} {response.text[:200]}")
        time.sleep(1)  # a crash would take a moment to show in the process tree
        after_processes = processes(hostile_system)
        after_queue = queued_and_recorded(hostile_system)
        rss_after = rss_mb(hostile_system, "submit")
        assert client.get("/health").status_code == 200
    times = sorted(t for t, _, _ in latencies)
    p50, p99 = statistics.median(times), times[max(0, int(len(times) * 0.99) - 1)]
    statuses: dict[int, int] = {}
    for _, _, status in latencies:
        statuses[status] = statuses.get(status, 0) + 1
    slowest = ", ".join(f"{n} {t * 1000:.0f} ms" for t, n, _ in sorted(latencies, reverse=True)[:6])
    print(
        f"\nabuse corpus: {len(cases)} hostile requests, "
        f"statuses {dict(sorted(statuses.items()))}, "
        f"5xx {sum(v for k, v in statuses.items() if k >= 500)}; rejection latency "
        f"p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max {times[-1] * 1000:.0f} ms; "
        f"slowest: {slowest}; processes {len(before_processes)} before, "
        f"{len(after_processes)} after, restarted {len(before_processes - after_processes)}; "
        f"JetStream last seq {before_queue[0]} -> {after_queue[0]}, task/batch/idempotency keys "
        f"{len(before_queue[1])} -> {len(after_queue[1])}; submit function RSS "
        f"{rss_before:.0f} -> {rss_after:.0f} MB"
    )
    assert problems == [], "\n".join(problems)
    assert after_processes == before_processes, before_processes ^ after_processes
    assert after_queue == before_queue, "a hostile request was queued or recorded"
    # The goal is p99 < 100 ms; on a shared machine assert only a generous bound.
    assert p50 < 0.5 and p99 < 5.0


def test_a_parse_bomb_holds_up_no_other_submit(hostile_system: System) -> None:
    """Issue 13: a 145-byte program parsed for 39.8 s on the submit function's event loop,
    and a Bell submit sent meanwhile waited 38.8 s. Now a program that runs into the
    deadline is killed with its parse process (1.5 s here), and the Bell submit is
    answered meanwhile."""
    chain = "gate g0 a { x a; x a; } " + " ".join(
        f"gate g{i} a {{ g{i - 1} a; g{i - 1} a; }}" for i in range(1, 14)
    )
    bomb = Q3 + chain + " qubit q; bit c; " + "g13 q; " * 30 + "c = measure q;"
    qubits = ", ".join(f"q[{i}]" for i in range(8))
    dense = Q3 + f"qubit[8] q; bit c; ctrl(7) @ pow(0.5) @ x {qubits}; c = measure q[0];"

    def post(program: str) -> tuple[httpx.Response, float]:
        with httpx.Client(base_url=hostile_system.url, timeout=60) as client:
            started = time.perf_counter()
            response = client.post("/tasks", json={"quantum_circuit": program})
            return response, time.perf_counter() - started

    with ThreadPoolExecutor(3) as pool_of_clients:
        slow = pool_of_clients.submit(post, bomb)
        time.sleep(0.3)  # the bomb is being parsed
        dense_answer = pool_of_clients.submit(post, dense)
        bell, bell_seconds = post(BELL3)
        (refused, refused_seconds), (matrix, _) = slow.result(), dense_answer.result()
    assert bell.status_code == 201 and bell_seconds < 1.5, (bell.text, bell_seconds)
    assert matrix.status_code == 422 and "pow" in matrix.json()["detail"]
    assert refused.status_code == 422 and refused.json()["limit"] == "parse seconds"
    assert refused_seconds < 1.5 + 3  # the budget, and a margin for a loaded machine
