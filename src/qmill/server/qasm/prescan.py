"""One linear pass over the program text, before any parser runs: what it measures.

Parse cost grows with what this measures (statements, the longest statement, nesting),
and a parser handed too much of it stalls or crashes the process: a 1 MiB program costs
the ANTLR parser 40-70 s and 650-830 MB; a long run of ``(`` or of unary operators makes
its prediction quadratic before it hits ``RecursionError``, and overflows the Rust
importer's stack (a segfault). Registers are added up here too, so that
``qubit[99999999] q;`` is refused before a parser allocates ~800 MB for it.

`scan` only measures; `checks.check_text` decides what is refused and
`program.choose_importer` which importer runs, both from the `Prescan` it returns.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

# Comments and string literals, left to right, so that "//" inside a string is not a
# comment and "include" inside a comment or string is not an include.
_LEXEMES = re.compile(
    r"//[^\n]*|/\*.*?(?:\*/|\Z)|\"[^\"\r\n]*\"?|'[^'\r\n]*'?|\binclude\b", re.DOTALL
)
_FILE_NAME = re.compile(r"\s*(?:\"([^\"\r\n]*)\"|'([^'\r\n]*)')")
_BAD_CHARACTER = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_BRACKET = re.compile(r"[(\[{)\]}]")
_UNARY_RUN = re.compile(r"(?:[-+~!]\s*){2,}")
_VERSION = re.compile(r"\s*OPENQASM\s+([0-9]+)(?:\.[0-9]+)?\s*;")
_SIZED = re.compile(r"\b(qubit|bit)\s*\[([^\]\n]*)\]|\b(qreg|creg)\s+[^\s\[;]+\s*\[([^\]\n]*)\]")
_HARDWARE_QUBIT = re.compile(r"\$([0-9]{1,4000})")
_UNSIZED = re.compile(r"\b(qubit|bit)\b(?!\s*\[)")
# Register sizes are clamped here, so that no size expression is expensive to evaluate.
_CAP = 2**63


@dataclass(frozen=True, slots=True)
class Include:
    offset: int
    # The quoted file name; None when the keyword is not followed by one.
    filename: str | None


@dataclass(frozen=True, slots=True)
class BadRegister:
    """A register whose size is not a constant integer expression."""

    offset: int
    kind: str
    size: str


@dataclass(frozen=True, slots=True)
class Prescan:
    """What the text alone says about a program. Offsets index `stripped`, which has the
    same length and lines as the program, so `line_col` gives positions users see."""

    # The program with comments blanked (newlines kept).
    stripped: str
    version: int
    empty: bool
    # The first control character or lone surrogate (comments included), and where.
    bad_character: str | None
    bad_character_at: int
    includes: tuple[Include, ...]
    # Semicolons anywhere, comments included: the whole text costs lexing.
    statements: int
    # The longest run of text between two semicolons outside comments, and where it starts.
    longest_statement: int
    longest_statement_at: int
    # Brackets open at once outside comments (a stray closing one never counts below
    # zero, so ")))(((" cannot hide depth), and where the deepest is.
    nesting: int
    nesting_at: int
    # Unary operators in a row ("- - - 1" nests like brackets, without any).
    unary_run: int
    unary_run_at: int
    # Qubits and classical bits the declarations add up to, over-counted rather than
    # under-counted (a cast such as ``bit[8](x)`` looks like a declaration).
    declared_qubits: int
    declared_clbits: int
    # One past the highest hardware qubit (``$n``) named: the importer makes them all.
    hardware_qubits: int
    bad_register: BadRegister | None
    # Gate modifiers (``ctrl(n) @``, ``pow(k) @``): allocations that grow with n and k.
    modifiers: bool


def scan(source: str) -> Prescan:
    stripped, includes = _strip(source)
    version = _VERSION.match(stripped)
    longest, longest_at = _longest_statement(stripped)
    nesting, nesting_at = _nesting(stripped)
    unary, unary_at = _unary_run(stripped)
    bad = _BAD_CHARACTER.search(source)
    qubits, clbits, bad_register = _declarations(stripped)
    hardware = max((int(m.group(1)) for m in _HARDWARE_QUBIT.finditer(stripped)), default=-1)
    return Prescan(
        stripped=stripped,
        version=int(version.group(1)) if version else 3,
        empty=not stripped.strip(),
        bad_character=None if bad is None else bad.group(0),
        bad_character_at=0 if bad is None else bad.start(),
        includes=includes,
        statements=source.count(";"),
        longest_statement=longest,
        longest_statement_at=longest_at,
        nesting=nesting,
        nesting_at=nesting_at,
        unary_run=unary,
        unary_run_at=unary_at,
        declared_qubits=qubits,
        declared_clbits=clbits,
        hardware_qubits=hardware + 1,
        bad_register=bad_register,
        modifiers="@" in stripped,
    )


def _strip(source: str) -> tuple[str, tuple[Include, ...]]:
    """The program with comments blanked (newlines kept, so positions stay right), and
    its ``include`` keywords (none inside a comment or a string) with their file names."""
    out: list[str] = []
    last = 0
    offsets: list[int] = []
    for match in _LEXEMES.finditer(source):
        text = match.group(0)
        if text.startswith("/"):
            out.append(source[last : match.start()])
            out.append(re.sub(r"[^\n]", " ", text))
            last = match.end()
        elif text == "include":
            offsets.append(match.start())
    out.append(source[last:])
    stripped = "".join(out)
    includes = []
    for offset in offsets:
        name = _FILE_NAME.match(stripped, offset + len("include"))
        filename = None if name is None else (name.group(1) or name.group(2) or "")
        includes.append(Include(offset, filename))
    return stripped, tuple(includes)


def _longest_statement(stripped: str) -> tuple[int, int]:
    longest = longest_at = start = 0
    for statement in stripped.split(";"):
        if len(statement) > longest:
            longest, longest_at = len(statement), start
        start += len(statement) + 1
    return longest, longest_at


def _nesting(stripped: str) -> tuple[int, int]:
    depth = deepest = deepest_at = 0
    for match in _BRACKET.finditer(stripped):
        if match.group(0) in "([{":
            depth += 1
            if depth > deepest:
                deepest, deepest_at = depth, match.start()
        else:
            depth = max(0, depth - 1)
    return deepest, deepest_at


def _unary_run(stripped: str) -> tuple[int, int]:
    longest = longest_at = 0
    for match in _UNARY_RUN.finditer(stripped):
        run = sum(1 for c in match.group(0) if c in "-+~!")
        if run > longest:
            longest, longest_at = run, match.start()
    return longest, longest_at


def _declarations(stripped: str) -> tuple[int, int, BadRegister | None]:
    """Every register a program declares, added up before a parser allocates any. A size
    that is not a constant integer expression is reported: the reference importer
    cannot resolve one either."""
    qubits = clbits = 0
    for match in _SIZED.finditer(stripped):
        kind = match.group(1) or match.group(3)
        text = match.group(2) if match.group(1) else match.group(4)
        size = _constant(text)
        if size is None:
            return qubits, clbits, BadRegister(match.start(), kind, text.strip())
        if kind in ("qubit", "qreg"):
            qubits += size
        else:
            clbits += size
    for match in _UNSIZED.finditer(stripped):
        if match.group(1) == "qubit":
            qubits += 1
        else:
            clbits += 1
    return qubits, clbits, None


def _constant(text: str) -> int | None:
    """A register size: an integer literal, or literals with + - * and parentheses.

    Evaluated by hand on Python's AST (the literal syntax is the same, underscores and
    0x/0o/0b included) with every intermediate clamped, so no expression is expensive.
    """
    text = text.strip()
    if not text or len(text) > 64:
        return None
    try:
        tree = ast.parse(text, mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None

    def value(node: ast.expr) -> int | None:
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return min(node.value, _CAP)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
            inner = value(node.operand)
            return None if inner is None else (inner if isinstance(node.op, ast.UAdd) else -inner)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub | ast.Mult):
            left, right = value(node.left), value(node.right)
            if left is None or right is None:
                return None
            if isinstance(node.op, ast.Add):
                result = left + right
            elif isinstance(node.op, ast.Sub):
                result = left - right
            else:
                result = left * right
            return max(-_CAP, min(result, _CAP))
        return None

    return value(tree)


def line_col(text: str, offset: int) -> tuple[int, int]:
    """1-based line and column of ``offset``."""
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column
