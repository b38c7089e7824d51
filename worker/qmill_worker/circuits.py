"""Programs parsed and lowered once per simulation child: an LRU of lowered circuits.

Parsing a Bell program takes ~0.7 ms and lowering it ~0.4 ms, more than Aer takes to
sample it; clients resubmit the same program text (benchmarks, retries, a batch of one
circuit with many seeds). Keyed by the text and by what lowering depends on (the
method's gate set, noise, a sweep's bindable gates), bounded in entries and in bytes
of program text, so a stream of distinct large programs cannot grow the child.

A cached circuit is shared by every later run of the same program, so nothing may
change it: Aer's ``run`` only reads the circuits it is given (the worker's tests check
that a circuit is unchanged by a run), and every change qmill makes to a lowered
circuit (`workloads.with_expectation_values`) works on a copy. The one in-place change,
`workloads.without_parameterized_phase`, is made here, before the circuit is cached.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from qmill.server import qasm
from qmill_worker import workloads

# Entries and program text (characters) one child keeps. A Bell program is ~130
# characters and its lowered circuit a few KB of Python objects; 256 programs of up to
# the largest admitted text stay within tens of MB. A program longer than a quarter of
# the text budget is not cached: it would push out many small ones for one reuse.
CACHE_ENTRIES = 256
CACHE_TEXT_CHARS = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Lowered:
    """A program as Aer runs it: its lowered circuit (never changed once cached), and
    the width and depth of the program as parsed."""

    circuit: Any
    qubits: int
    depth: int


class CircuitCache:
    """An LRU of `Lowered` programs, bounded in entries and in characters of text."""

    def __init__(self, entries: int = CACHE_ENTRIES, text_chars: int = CACHE_TEXT_CHARS) -> None:
        self._entries = entries
        self._text_chars = text_chars
        self._chars = 0
        self._items: OrderedDict[tuple[str, str, bool, bool], Lowered] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def chars(self) -> int:
        return self._chars

    def lowered(self, program: str, method: str, noisy: bool, swept: bool) -> Lowered:
        """The program parsed and lowered for ``method``; raises `RequestError` (not
        cached) if it does not parse."""
        key = (program, method, noisy, swept)
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
            self.hits += 1
            return found
        self.misses += 1
        parsed = qasm.parse(program)
        manager = workloads.pass_manager(method, noisy, swept)
        circuit = workloads.without_parameterized_phase(manager.run(parsed.circuit))
        made = Lowered(circuit, parsed.qubits, parsed.depth)
        if len(program) <= self._text_chars // 4:
            self._items[key] = made
            self._chars += len(program)
            while len(self._items) > self._entries or self._chars > self._text_chars:
                (old, _, _, _), _ = self._items.popitem(last=False)
                self._chars -= len(old)
        return made


# The child's cache (one per process: a forked child starts with the zygote's, empty).
CACHE = CircuitCache()
