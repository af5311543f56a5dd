"""HLO text <-> IR.

``parse_module`` reads HLO text as TensorFlow/XLA prints it (``experimental_get_compiler_ir(...)(stage="hlo")``,
XLA dump files); ``module_to_text`` / ``computation_to_text`` print the IR back in standard HLO syntax.
The printer is deterministic because its output is hashed into the executable-cache key, and
``parse_module(module_to_text(m))`` reproduces ``m`` (opcodes, shapes, attrs, metadata, called computations,
aliases).

Attributes follow the conventions in ``xla_lowering.hlo.__init__``. Attributes that do not change what a
single-device program computes (layouts, sharding, frontend attributes, precision hints, ...) are ignored;
any other attribute the parser does not understand is an error rather than being silently dropped.

This module must not import TensorFlow. ``normalize_attrs`` and the small tables below are shared with the
proto importer (``tf_ipu.hlo_proto``) so that both importers produce identical attributes.
"""
from __future__ import annotations

import codecs
import re
from typing import Any, Callable

import numpy as np

from ..errors import DynamicShapeError
from .ir import Alias, Computation, Instruction, Module, Shape, np_dtype


class HloParseError(ValueError):
    """Malformed HLO text. ``line`` is 1-based; ``text`` is the offending line."""

    def __init__(self, message: str, line: int | None = None, text: str | None = None):
        self.message, self.line, self.text = message, line, text
        where = f"line {line}: " if line is not None else ""
        shown = f"\n    {text.strip()}" if text else ""
        super().__init__(f"HLO parse error: {where}{message}{shown}")


class DynamicShapeNotSupported(DynamicShapeError, NotImplementedError):
    """A shape with a dynamic (``<=N``) dimension: the IR, like the IPU, only has static shapes."""


# --- conventions shared with the proto importer ----------------------------------------------------
# Every element type XLA can print; shapes may use any of them (lowering rejects what it cannot run),
# constants only those in ir.NUMPY_DTYPES.
XLA_DTYPES = frozenset(
    "pred s1 s2 s4 s8 s16 s32 s64 u1 u2 u4 u8 u16 u32 u64 f16 bf16 f32 f64 c64 c128 token opaque "
    "f8e5m2 f8e4m3 f8e4m3fn f8e4m3b11fnuz f8e3m4 f8e5m2fnuz f8e4m3fnuz f4e2m1fn f8e8m0fnu".split())

# XLA fusion kind <-> IR ``kind``: the fusion pass makes 'expression' fusions, which are XLA's loop fusions.
FUSION_KIND_FROM_XLA = {"kLoop": "expression"}
FUSION_KIND_TO_XLA = {v: k for k, v in FUSION_KIND_FROM_XLA.items()}

# Attributes that get a default when absent, so that text (which omits defaults) and protos (which
# always carry every field) give identical ``attrs``.
_ATTR_DEFAULTS: dict[str, dict[str, Any]] = {
    "dot": {"lhs_batch_dims": (), "rhs_batch_dims": (), "lhs_contracting_dims": (), "rhs_contracting_dims": ()},
    "gather": {"offset_dims": (), "collapsed_slice_dims": (), "start_index_map": (), "operand_batching_dims": (),
               "start_indices_batching_dims": (), "indices_are_sorted": False},
    "scatter": {"update_window_dims": (), "inserted_window_dims": (), "scatter_dims_to_operand_dims": (),
                "input_batching_dims": (), "scatter_indices_batching_dims": (), "indices_are_sorted": False,
                "unique_indices": False},
    "convolution": {"feature_group_count": 1, "batch_group_count": 1},
    "sort": {"is_stable": False},
    "custom-call": {"backend_config": ""},
    "rng-bit-generator": {"algorithm": "default"},
}


def default_compare_type(dtype: str) -> str:
    """XLA's comparison type for an operand element type when ``type=`` is not given."""
    if dtype.startswith(("f", "bf", "c")):
        return "FLOAT"
    if dtype.startswith("s"):
        return "SIGNED"
    return "UNSIGNED"  # unsigned ints and pred


def normalize_attrs(inst: Instruction) -> None:
    """Fill defaults and drop redundant values so that equivalent instructions have equal ``attrs``.

    Called by both importers once the instruction's operands are known.
    """
    for key, value in _ATTR_DEFAULTS.get(inst.opcode, {}).items():
        inst.attrs.setdefault(key, value)
    if inst.opcode == "compare" and inst.operands:
        # the printer omits the default type; a proto always carries one
        if inst.attrs.get("compare_type") == default_compare_type(inst.operands[0].shape.dtype):
            del inst.attrs["compare_type"]


def as_f32_float(value) -> float:
    """``epsilon`` is a float32 in XLA: store it rounded to f32 so text and proto agree."""
    return float(np.float32(value))


# --- parser ------------------------------------------------------------------------------------------
_NAME_RE = re.compile(r"%?([A-Za-z_][\w.\-]*)|%([\w.\-]+)")
_ATTR_KEY_RE = re.compile(r"([A-Za-z_][\w\-]*)=")
_DTYPE_RE = re.compile(r"([a-z][a-z0-9]*)\[")
_INT_RE = re.compile(r"-?\d+")
_COMMENT_RE = re.compile(r"/\*.*?\*/", re.S)
_LITERAL_TOKEN_RE = re.compile(r"[{}(),]|[^\s{}(),]+")
_STRING_RE = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)
_SCAN_RE = re.compile(r'["{}\[\]()\n,]')
# one input_output_alias entry: {output index}: (parameter, {parameter index}[, may-alias])
_ALIAS_ENTRY_RE = re.compile(r"\s*\{([\d,\s]*)\}\s*:\s*\(\s*(\d+)\s*,\s*\{([\d,\s]*)\}\s*(?:,\s*([\w\-]+)\s*)?\)\s*")
# Trailing sections of newer XLA dumps (stack-frame tables); they only carry debug locations.
_TRAILER_SECTIONS = ("FileNames", "FunctionNames", "FileLocations", "StackFrames")


def parse_module(text: str) -> Module:
    """Parse HLO module text into the IR. Raises HloParseError on malformed text."""
    return _Parser(text).module()


def _unescape(s: str) -> str:
    """Undo XLA's C-style string escaping (CEscape)."""
    return codecs.escape_decode(s.encode("utf-8"))[0].decode("utf-8")


class _Parser:
    """Recursive-descent parser over the whole text; ``pos`` is a character offset."""

    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        # (instruction, role, computation name, position) resolved once every computation is parsed,
        # because a computation may be referenced before it appears
        self.pending_calls: list[tuple[Instruction, str, str, int]] = []

    # -- errors and low-level scanning --
    def line_of(self, pos: int) -> tuple[int, str]:
        line = self.text.count("\n", 0, pos) + 1
        start = self.text.rfind("\n", 0, pos) + 1
        end = self.text.find("\n", pos)
        return line, self.text[start:end if end >= 0 else len(self.text)]

    def error(self, message: str, pos: int | None = None) -> HloParseError:
        line, text = self.line_of(self.pos if pos is None else pos)
        return HloParseError(message, line, text)

    def unsupported(self, message: str, pos: int | None = None, error=NotImplementedError) -> NotImplementedError:
        line, text = self.line_of(self.pos if pos is None else pos)
        return error(f"line {line}: {message}\n    {text.strip()}")

    def skip_ws(self) -> None:
        """Skip whitespace and comments (XLA prints ``/*index=5*/`` inside long tuples)."""
        text, n = self.text, len(self.text)
        while self.pos < n:
            c = text[self.pos]
            if c.isspace():
                self.pos += 1
            elif text.startswith("/*", self.pos):
                end = text.find("*/", self.pos + 2)
                if end < 0:
                    raise self.error("unterminated comment")
                self.pos = end + 2
            elif text.startswith("//", self.pos):
                end = text.find("\n", self.pos)
                self.pos = n if end < 0 else end
            else:
                return

    def at(self, s: str) -> bool:
        self.skip_ws()
        return self.text.startswith(s, self.pos)

    def accept(self, s: str) -> bool:
        if self.at(s):
            self.pos += len(s)
            return True
        return False

    def keyword(self, word: str) -> bool:
        """Accept ``word`` only as a whole word (an instruction may be called ROOTx)."""
        self.skip_ws()
        if re.match(re.escape(word) + r"(?![\w.\-])", self.text[self.pos:self.pos + len(word) + 1]):
            self.pos += len(word)
            return True
        return False

    def expect(self, s: str, what: str = "") -> None:
        if not self.accept(s):
            found = self.text[self.pos:self.pos + 20].split("\n")[0] or "end of text"
            raise self.error(f"expected '{s}'{' ' + what if what else ''}, found '{found}'")

    def name(self, what: str = "a name") -> str:
        self.skip_ws()
        m = _NAME_RE.match(self.text, self.pos)
        if not m:
            raise self.error(f"expected {what}")
        self.pos = m.end()
        return m.group(1) or m.group(2)

    def integer(self) -> int:
        self.skip_ws()
        m = _INT_RE.match(self.text, self.pos)
        if not m:
            raise self.error("expected an integer")
        self.pos = m.end()
        return int(m.group())

    def balanced(self, open_: str, close: str) -> str:
        """The text between ``open_`` at ``pos`` and its matching ``close`` (strings respected)."""
        self.expect(open_)
        start = self.pos
        self.scan(1, stop_at_separator=False)
        if self.pos >= len(self.text):
            raise self.error(f"unbalanced '{open_}'", start - 1)
        self.pos += 1  # the matching closer
        return self.text[start:self.pos - 1]

    def skip_string(self) -> None:
        m = _STRING_RE.match(self.text, self.pos)
        if not m:
            raise self.error("unterminated string")
        self.pos = m.end()

    def raw_value(self) -> str:
        """An attribute value: everything up to a top-level ',' / newline / unmatched closer."""
        self.skip_ws()
        start = self.pos
        if self.scan(0, stop_at_separator=True):
            raise self.error("unbalanced brackets in attribute value", start)
        return self.text[start:self.pos].strip()

    def scan(self, depth: int, stop_at_separator: bool) -> int:
        """Move ``pos`` to the closer that takes ``depth`` below 1 (or, at depth 0, to a ',' / newline).

        Jumps between interesting characters with a regex: constants can be megabytes long. Returns the
        depth left when the text ends early.
        """
        text = self.text
        while True:
            m = _SCAN_RE.search(text, self.pos)
            if not m:
                self.pos = len(text)
                return depth
            self.pos, c = m.start(), m.group()
            if c == '"':
                self.skip_string()
                continue
            if c in "{[(":
                depth += 1
            elif c in "}])":
                if depth <= 1 and not stop_at_separator or depth == 0:
                    return 0
                depth -= 1
            elif depth == 0 and stop_at_separator:
                return 0
            self.pos += 1

    # -- module structure --
    def module(self) -> Module:
        if not self.keyword("HloModule"):
            raise self.error("expected 'HloModule name' at the start of the module")
        name = self.name("the module name")
        aliases = self.module_attributes()
        computations: dict[str, Computation] = {}
        entry = None
        while True:
            self.skip_ws()
            if self.pos >= len(self.text) or self.at_trailer():
                break
            comp_pos = self.pos
            comp, is_entry = self.computation()
            if comp.name in computations:
                raise self.error(f"duplicate computation name '{comp.name}'", comp_pos)
            computations[comp.name] = comp
            if is_entry:
                if entry is not None:
                    raise self.error("more than one ENTRY computation", comp_pos)
                entry = comp
        if not computations:
            raise self.error("the module has no computations")
        self.resolve_calls(computations)
        # like XLA: without an ENTRY marker the last computation is the entry
        entry = entry or list(computations.values())[-1]
        return Module(name, entry, aliases)

    def at_trailer(self) -> bool:
        return any(self.text.startswith(s, self.pos) for s in _TRAILER_SECTIONS)

    def module_attributes(self) -> list[Alias]:
        aliases: list[Alias] = []
        while self.accept(","):
            self.skip_ws()
            key_pos = self.pos
            m = _ATTR_KEY_RE.match(self.text, self.pos)
            if not m:
                raise self.error("expected 'key=value' in the module header")
            self.pos = m.end()
            value = self.raw_value()
            # other header attributes (entry_computation_layout, is_scheduled, replica_count, ...) are
            # compilation settings that do not change the program
            if m.group(1) == "input_output_alias":
                aliases = self.aliases(value, key_pos)
        return aliases

    def aliases(self, raw: str, pos: int) -> list[Alias]:
        """``{ {1}: (1, {}, may-alias), {0}: (0, {2}) }``; the alias kind is not kept."""
        body = raw.strip()
        if not (body.startswith("{") and body.endswith("}")):
            raise self.error("malformed input_output_alias", pos)
        body, out, i = body[1:-1], [], 0
        while body[i:].strip():
            m = _ALIAS_ENTRY_RE.match(body, i)
            if not m:
                raise self.error(f"malformed input_output_alias entry '{body[i:].strip()}'", pos)
            out.append(Alias(_index_tuple(m.group(1)), int(m.group(2)), _index_tuple(m.group(3))))
            i = m.end()
            if i < len(body) and body[i] == ",":
                i += 1
        return out

    def computation(self) -> tuple[Computation, bool]:
        is_entry = self.keyword("ENTRY")
        comp_pos = self.pos
        name = self.name("a computation name")
        if self.at("("):
            self.balanced("(", ")")  # the signature repeats the parameters' shapes; the body is the truth
            self.expect("->", "after the computation's parameters")
            self.shape()
        self.expect("{", f"to open computation '{name}'")
        scope: dict[str, Instruction] = {}
        instructions: list[Instruction] = []
        root = None
        while not self.accept("}"):
            if self.pos >= len(self.text):
                raise self.error(f"computation '{name}' is not closed", comp_pos)
            inst, is_root = self.instruction(scope)
            instructions.append(inst)
            if is_root:
                if root is not None:
                    raise self.error(f"computation '{name}' has two ROOT instructions")
                root = inst
        if self.accept(","):  # e.g. execution_thread="..." after the body
            self.raw_value()
        if not instructions:
            raise self.error(f"computation '{name}' is empty", comp_pos)
        return Computation(name, instructions, root or instructions[-1]), is_entry

    def resolve_calls(self, computations: dict[str, Computation]) -> None:
        for inst, role, comp_name, pos in self.pending_calls:
            if comp_name not in computations:
                raise self.error(f"unknown computation '{comp_name}' called by %{inst.name}", pos)
            inst.called[role] = computations[comp_name]

    # -- instructions --
    def instruction(self, scope: dict[str, Instruction]) -> tuple[Instruction, bool]:
        self.skip_ws()
        start = self.pos
        is_root = self.keyword("ROOT")
        if is_root and self.at("="):  # an instruction literally named ROOT
            self.pos, is_root = start, False
        name = self.name("an instruction name")
        if name in scope:
            raise self.error(f"duplicate instruction name '%{name}'", start)
        self.expect("=", f"after '%{name}'")
        shape = self.shape()
        opcode = self.name("an opcode")
        inst = Instruction(opcode, shape, name=name)
        self.operands(inst, scope)
        while self.accept(","):
            self.attribute(inst)
        normalize_attrs(inst)
        scope[name] = inst
        return inst, is_root

    def operands(self, inst: Instruction, scope: dict[str, Instruction]) -> None:
        paren_pos = self.pos
        if inst.opcode == "parameter":
            self.expect("(")
            inst.attrs["number"] = self.integer()
            self.expect(")")
        elif inst.opcode == "constant":
            raw = self.balanced("(", ")")
            inst.attrs["value"] = self.literal(raw, inst.shape, paren_pos)
        else:
            self.expect("(", f"after opcode '{inst.opcode}'")
            if not self.accept(")"):
                while True:
                    inst.operands.append(self.operand(scope))
                    if self.accept(")"):
                        break
                    self.expect(",", "between operands")

    def operand(self, scope: dict[str, Instruction]) -> Instruction:
        self.skip_ws()
        if self.at("(") or _DTYPE_RE.match(self.text, self.pos):
            self.shape()  # typed operand: the type is redundant with the definition
        pos = self.pos
        name = self.name("an operand name")
        if name not in scope:
            raise self.error(f"operand '%{name}' is not defined before use", pos)
        return scope[name]

    # -- shapes --
    def shape(self) -> Shape:
        self.skip_ws()
        if self.accept("("):
            parts: list[Shape] = []
            if not self.accept(")"):
                while True:
                    parts.append(self.shape())
                    if self.accept(")"):
                        break
                    self.expect(",", "in tuple shape")
            return Shape.tuple(parts)
        start = self.pos
        m = _DTYPE_RE.match(self.text, self.pos)
        if not m:
            raise self.error("expected a shape such as f32[4,8]")
        dtype = m.group(1)
        if dtype not in XLA_DTYPES:
            raise self.error(f"unknown element type '{dtype}'")
        self.pos = m.end()
        end = self.text.find("]", self.pos)
        if end < 0 or "\n" in self.text[self.pos:end]:
            raise self.error("unterminated shape dimensions", start)
        dims = self.dims(self.text[self.pos:end], start)
        self.pos = end + 1
        if self.text.startswith("{", self.pos):  # layout (only when glued to the dims): ignored
            self.balanced("{", "}")
        return Shape(dtype, dims)

    def dims(self, raw: str, pos: int) -> tuple[int, ...]:
        dims = []
        for part in (p.strip() for p in raw.split(",")) if raw.strip() else ():
            if part.startswith("<=") or part == "?":
                raise self.unsupported(f"dynamic dimension '{part}' in shape is not supported", pos,
                                       DynamicShapeNotSupported)
            if not _INT_RE.fullmatch(part) or int(part) < 0:
                raise self.error(f"bad dimension '{part}'", pos)
            dims.append(int(part))
        return tuple(dims)

    # -- constants --
    def literal(self, raw: str, shape: Shape, pos: int):
        """A constant's value: a NumPy array of ``shape`` (a tuple of them for tuple shapes)."""
        if "..." in raw:
            raise self.error("constant values are elided ('...'); dump the HLO with large constants printed", pos)
        tokens = _LITERAL_TOKEN_RE.findall(_COMMENT_RE.sub(" ", raw))
        reader = _LiteralReader(tokens, lambda msg: self.error(f"constant: {msg}", pos))
        try:
            value = reader.value(shape)
        except NotImplementedError as e:  # e.g. a bf16 constant
            raise self.unsupported(f"constant: {e}", pos) from None
        if reader.i != len(tokens):
            raise self.error(f"constant: unexpected '{tokens[reader.i]}' after the value", pos)
        return value

    # -- attributes --
    def attribute(self, inst: Instruction) -> None:
        self.skip_ws()
        pos = self.pos
        m = _ATTR_KEY_RE.match(self.text, self.pos)
        if not m:
            raise self.error(f"expected 'key=value' attribute on %{inst.name}")
        self.pos = m.end()
        key, raw = m.group(1), self.raw_value()
        handler = _ATTR_HANDLERS.get(key)
        if handler is None:
            if key in _IGNORED_ATTRS:
                return
            raise self.error(f"unsupported attribute '{key}' on {inst.opcode} %{inst.name}", pos)
        try:
            handler(self, inst, raw, pos)
        except (ValueError, IndexError, KeyError) as e:
            if isinstance(e, HloParseError):
                raise
            raise self.error(f"bad value for '{key}': {raw!r} ({e})", pos) from None

    def call(self, inst: Instruction, role: str, raw: str, pos: int) -> None:
        m = _NAME_RE.fullmatch(raw)
        if not m:
            raise self.error(f"expected a computation name, found '{raw}'", pos)
        self.pending_calls.append((inst, role, m.group(1) or m.group(2), pos))


class _LiteralReader:
    """Reads a constant's tokens (``{ {1, 2}, {3, 4} }``, ``( {1}, 2 )``) against its shape."""

    def __init__(self, tokens: list[str], error: Callable[[str], Exception]):
        self.tokens, self.i, self.error = tokens, 0, error

    def take(self, expected: str | None = None) -> str:
        if self.i >= len(self.tokens):
            raise self.error("value ends early")
        tok = self.tokens[self.i]
        if expected is not None and tok != expected:
            raise self.error(f"expected '{expected}', found '{tok}'")
        self.i += 1
        return tok

    def innermost(self, n: int, out: list[str]) -> None:
        """``v0, v1, ...`` of the last dimension in one slice: big constants are mostly this."""
        chunk = self.tokens[self.i:self.i + 2 * n - 1]
        if len(chunk) < 2 * n - 1 or any(t != "," for t in chunk[1::2]) or \
                any(t in "{}()," for t in chunk[0::2]):
            for k in range(n):  # slow path, for the precise error message
                if k:
                    self.take(",")
                out.append(self.take())
                if out[-1] in "{}(),":
                    raise self.error(f"expected a value, found '{out[-1]}'")
            return
        out.extend(chunk[0::2])
        self.i += 2 * n - 1

    def value(self, shape: Shape):
        if shape.is_tuple:
            self.take("(")
            parts = []
            for k, sub in enumerate(shape.tuple_shapes):
                if k:
                    self.take(",")
                parts.append(self.value(sub))
            self.take(")")
            return tuple(parts)
        flat: list[str] = []
        self.elements(shape.dims, flat)
        return _array_from_tokens(flat, shape, self.error)

    def elements(self, dims: tuple[int, ...], out: list[str]) -> None:
        """Row-major value tokens of an array; an empty array (any rank) is ``{}`` as XLA prints it."""
        if not dims:
            out.append(self.take())
            return
        self.take("{")
        if len(dims) == 1:
            if dims[0]:
                self.innermost(dims[0], out)
        else:
            for k in range(dims[0]):
                if k:
                    self.take(",")
                self.elements(dims[1:], out)
        self.take("}")


_PRED_WORDS = {"true": True, "false": False, "1": True, "0": False}


def _array_from_tokens(tokens: list[str], shape: Shape, error) -> np.ndarray:
    dtype = np_dtype(shape.dtype)
    try:
        if dtype == np.bool_:
            values = [_PRED_WORDS[t] for t in tokens]
        elif dtype.kind in "iu":
            values = [int(t) for t in tokens]
        else:
            # decimal -> f64 -> target type; the printer checks that its strings survive this path
            return _floats(tokens, dtype).reshape(shape.dims)
        return np.array(values, dtype=dtype).reshape(shape.dims)
    except (KeyError, ValueError, OverflowError) as e:
        raise error(f"bad {shape.dtype} value ({e})") from None


def _floats(tokens: list[str], dtype: np.dtype) -> np.ndarray:
    """Decimal strings -> f64 (correctly rounded) -> ``dtype``; the printer relies on this exact path."""
    values = np.array(tokens, dtype=np.str_).astype(np.float64) if tokens else np.zeros(0)
    with np.errstate(over="ignore"):
        return values.astype(dtype)


def _index_tuple(raw: str) -> tuple[int, ...]:
    return tuple(int(p) for p in raw.replace(" ", "").split(",") if p)


# -- attribute value parsers (raw text -> plain Python values) --
def _int_list(raw: str) -> tuple[int, ...]:
    raw = raw.strip()
    if not (raw.startswith("{") and raw.endswith("}")):
        raise ValueError("expected {i, j, ...}")
    return _index_tuple(raw[1:-1])


def _bool(raw: str) -> bool:
    if raw not in ("true", "false"):
        raise ValueError("expected true or false")
    return raw == "true"


def _string(raw: str) -> str:
    m = _STRING_RE.fullmatch(raw)
    if m:
        return _unescape(m.group(1))
    return raw  # XLA prints some string-valued attributes (e.g. JSON backend configs) without quotes


_SLICE_RE = re.compile(r"\s*\[\s*(-?\d+)\s*:\s*(-?\d+)\s*(?::\s*(-?\d+)\s*)?\]\s*")


def _slices(raw: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """``{[0:4:1], [1:3]}`` -> starts, limits, strides (stride defaults to 1)."""
    body = raw.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise ValueError("expected {[start:limit:stride], ...}")
    matches = list(_SLICE_RE.finditer(body[1:-1]))
    leftover = _SLICE_RE.sub("", body[1:-1])
    if leftover.replace(",", "").strip() or leftover.count(",") != max(len(matches) - 1, 0):
        raise ValueError("expected [start:limit:stride] per dimension")
    starts = tuple(int(m.group(1)) for m in matches)
    limits = tuple(int(m.group(2)) for m in matches)
    strides = tuple(int(m.group(3) or 1) for m in matches)
    return starts, limits, strides


def _padding(raw: str) -> tuple[tuple[int, int, int], ...]:
    """``0_0x1_2_0`` -> ((0, 0, 0), (1, 2, 0)): low_high[_interior] per dimension."""
    out = []
    for dim in raw.split("x") if raw else ():
        parts = [int(p) for p in re.findall(r"-?\d+", dim)]
        if len(parts) not in (2, 3) or not re.fullmatch(r"-?\d+_-?\d+(_-?\d+)?", dim):
            raise ValueError(f"bad padding '{dim}'")
        out.append((parts[0], parts[1], parts[2] if len(parts) == 3 else 0))
    return tuple(out)


_WINDOW_DEFAULTS = {"size": 1, "stride": 1, "pad_low": 0, "pad_high": 0, "window_dilation": 1,
                    "base_dilation": 1, "reversal": False}


def _window(raw: str) -> tuple[dict, ...]:
    """``{size=3x3 stride=2x2 pad=0_1x0_1 lhs_dilate=1x1 rhs_dilate=1x1 rhs_reversal=0x1}``."""
    body = raw.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise ValueError("expected {size=... ...}")
    fields = dict(item.split("=", 1) for item in body[1:-1].split())
    unknown = set(fields) - {"size", "stride", "pad", "lhs_dilate", "rhs_dilate", "rhs_reversal"}
    if unknown:
        raise ValueError(f"unknown window field(s) {sorted(unknown)}")
    if "size" not in fields:
        return ()
    size = [int(s) for s in fields["size"].split("x")]
    dims = [dict(_WINDOW_DEFAULTS, size=s) for s in size]

    def per_dim(key: str) -> list[str]:
        vals = fields[key].split("x")
        if len(vals) != len(dims):
            raise ValueError(f"window {key} has {len(vals)} dimensions, size has {len(dims)}")
        return vals

    for key, ir_key in (("stride", "stride"), ("lhs_dilate", "base_dilation"), ("rhs_dilate", "window_dilation")):
        if key in fields:
            for d, v in zip(dims, per_dim(key)):
                d[ir_key] = int(v)
    if "pad" in fields:
        for d, v in zip(dims, per_dim("pad")):
            (low, high, _), = _padding(v)
            d["pad_low"], d["pad_high"] = low, high
    if "rhs_reversal" in fields:
        for d, v in zip(dims, per_dim("rhs_reversal")):
            d["reversal"] = bool(int(v))
    return tuple(dims)


def _dim_labels(raw: str) -> dict:
    """``b01f_01io->b01f`` -> the convolution dnums dict."""
    m = re.fullmatch(r"([^_\s]+)_([^_\s]+)->(\S+)", raw)
    if not m:
        raise ValueError("expected lhs_rhs->out, e.g. b01f_01io->b01f")
    lhs, rhs, out = m.groups()

    def spatial(labels: str, fixed: str) -> tuple[int, ...]:
        if sorted(c for c in labels if not c.isdigit()) != sorted(fixed) or len(labels) < 2:
            raise ValueError(f"'{labels}' must contain {' and '.join(fixed)} once each")
        digits = sorted((c, i) for i, c in enumerate(labels) if c.isdigit())
        if [c for c, _ in digits] != [str(k) for k in range(len(digits))]:
            raise ValueError(f"'{labels}' spatial dimensions must be numbered 0..n-1")
        return tuple(i for _, i in digits)

    dnums = {
        "input_batch_dimension": lhs.find("b"), "input_feature_dimension": lhs.find("f"),
        "input_spatial_dimensions": spatial(lhs, "bf"),
        "kernel_input_feature_dimension": rhs.find("i"), "kernel_output_feature_dimension": rhs.find("o"),
        "kernel_spatial_dimensions": spatial(rhs, "io"),
        "output_batch_dimension": out.find("b"), "output_feature_dimension": out.find("f"),
        "output_spatial_dimensions": spatial(out, "bf"),
    }
    return dnums


_METADATA_ITEM_RE = re.compile(r'\s*([\w\-]+)=("(?:[^"\\]|\\.)*"|\{[^}]*\}|[^\s}]+)')


def _metadata(raw: str) -> dict:
    """``{op_type="..." op_name="..." source_file="..." source_line=N}``; other fields are dropped."""
    body = raw.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise ValueError("expected {key=value ...}")
    body, out, i = body[1:-1], {}, 0
    while body[i:].strip():
        m = _METADATA_ITEM_RE.match(body, i)
        if not m:
            raise ValueError(f"cannot read '{body[i:].strip()}'")
        key, value = m.groups()
        if key in ("op_type", "op_name", "source_file"):
            out[key] = _string(value)
        elif key == "source_line":
            out[key] = int(value)
        i = m.end()
    return out


def _set(ir_key: str, convert: Callable[[str], Any]):
    def handler(p: _Parser, inst: Instruction, raw: str, pos: int) -> None:
        inst.attrs[ir_key] = convert(raw)
    return handler


def _call(role: str):
    def handler(p: _Parser, inst: Instruction, raw: str, pos: int) -> None:
        p.call(inst, role, raw, pos)
    return handler


def _dimensions(p: _Parser, inst: Instruction, raw: str, pos: int) -> None:
    dims = _int_list(raw)
    if inst.opcode == "concatenate":
        if len(dims) != 1:
            raise p.error("concatenate needs exactly one dimension", pos)
        inst.attrs["dimension"] = dims[0]
    else:
        inst.attrs["dimensions"] = dims


def _slice(p: _Parser, inst: Instruction, raw: str, pos: int) -> None:
    inst.attrs["starts"], inst.attrs["limits"], inst.attrs["strides"] = _slices(raw)


def _branches(p: _Parser, inst: Instruction, raw: str, pos: int) -> None:
    body = raw.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise p.error("expected {%branch, ...}", pos)
    for k, name in enumerate(n.strip() for n in body[1:-1].split(",") if n.strip()):
        p.call(inst, f"branch_{k}", name, pos)


def _calls(p: _Parser, inst: Instruction, raw: str, pos: int) -> None:
    p.call(inst, "fused" if inst.opcode == "fusion" else "to_apply", raw, pos)


def _fusion_kind(p: _Parser, inst: Instruction, raw: str, pos: int) -> None:
    inst.attrs["kind"] = FUSION_KIND_FROM_XLA.get(raw, raw)


def _prefixed(prefix: str):
    """``rng_uniform`` -> 'uniform', ``rng_three_fry`` -> 'three_fry'."""
    def convert(raw: str) -> str:
        if not raw.startswith(prefix):
            raise ValueError(f"expected {prefix}...")
        return raw[len(prefix):]
    return convert


def _algorithm(p: _Parser, inst: Instruction, raw: str, pos: int) -> None:
    # on dot/convolution ``algorithm=`` is a precision hint, not a semantic attribute
    if inst.opcode == "rng-bit-generator":
        inst.attrs["algorithm"] = _prefixed("rng_")(raw)


def _backend_config(p: _Parser, inst: Instruction, raw: str, pos: int) -> None:
    # only custom-calls give it meaning; elsewhere it holds backend scheduling hints
    if inst.opcode == "custom-call":
        inst.attrs["backend_config"] = _string(raw)


def _metadata_attr(p: _Parser, inst: Instruction, raw: str, pos: int) -> None:
    inst.metadata.update(_metadata(raw))


_ATTR_HANDLERS: dict[str, Callable[[_Parser, Instruction, str, int], None]] = {
    "dimensions": _dimensions,
    "slice": _slice,
    "padding": _set("padding", _padding),
    "direction": _set("direction", str),
    "type": _set("compare_type", str),
    "index": _set("index", int),
    "iota_dimension": _set("iota_dimension", int),
    "window": _set("window", _window),
    "dim_labels": _set("dnums", _dim_labels),
    "distribution": _set("distribution", _prefixed("rng_")),
    "algorithm": _algorithm,
    "dynamic_slice_sizes": _set("slice_sizes", _int_list),
    "custom_call_target": _set("target", _string),
    "backend_config": _backend_config,
    "epsilon": _set("epsilon", lambda raw: as_f32_float(float(raw))),
    "kind": _fusion_kind,
    "metadata": _metadata_attr,
    "to_apply": _call("to_apply"),
    "condition": _call("condition"),
    "body": _call("body"),
    "select": _call("select"),
    "scatter": _call("scatter"),
    "true_computation": _call("branch_0"),
    "false_computation": _call("branch_1"),
    "branch_computations": _branches,
    "calls": _calls,
}
for _key in ("lhs_batch_dims", "rhs_batch_dims", "lhs_contracting_dims", "rhs_contracting_dims", "offset_dims",
             "collapsed_slice_dims", "start_index_map", "operand_batching_dims", "start_indices_batching_dims",
             "update_window_dims", "inserted_window_dims", "scatter_dims_to_operand_dims", "input_batching_dims",
             "scatter_indices_batching_dims", "slice_sizes"):
    _ATTR_HANDLERS[_key] = _set(_key, _int_list)
for _key in ("index_vector_dim", "feature_group_count", "batch_group_count", "feature_index", "exponent_bits",
             "mantissa_bits"):
    _ATTR_HANDLERS[_key] = _set(_key, int)
for _key in ("indices_are_sorted", "unique_indices", "is_stable"):
    _ATTR_HANDLERS[_key] = _set(_key, _bool)

# Attributes that do not change what a single-device program computes.
_IGNORED_ATTRS = frozenset({
    "frontend_attributes", "parameter_replication", "sharding", "operand_precision", "control-predecessors",
    "statistics", "result_accuracy", "origin", "custom_call_has_side_effect", "api_version", "schedule",
    "output_to_operand_aliasing", "custom_call_schedule", "channel_id", "replica_groups",
    "use_global_device_ids", "constrain_layout", "operand_layout_constraints", "original_value",
})


# --- printer -----------------------------------------------------------------------------------------
_PRINTABLE_NAME_RE = re.compile(r"[A-Za-z_][\w.\-]*")
_CALL_ROLE_ORDER = ("condition", "body", "select", "scatter", "to_apply", "fused")


def module_to_text(module: Module) -> str:
    """Standard HLO text for ``module``: called computations first, the entry last."""
    comps = _post_order(module.entry)
    names = _Names(comps)
    lines = [f"HloModule {_clean_name(module.name)}{_aliases_text(module.aliases)}", ""]
    for comp in comps:
        lines.append(_computation_text(comp, names, is_entry=comp is module.entry))
        lines.append("")
    return "\n".join(lines)


def computation_to_text(comp: Computation) -> str:
    """One computation (without the computations it calls)."""
    return _computation_text(comp, _Names([comp]), is_entry=False)


def _post_order(entry: Computation) -> list[Computation]:
    """Callees before callers, in the order instructions and roles are printed (deterministic)."""
    order: list[Computation] = []
    seen: set[int] = set()

    def visit(comp: Computation) -> None:
        seen.add(id(comp))
        for inst in comp.instructions:
            for _, callee in _called_in_order(inst):
                if id(callee) not in seen:
                    visit(callee)
        order.append(comp)

    visit(entry)
    return order


def _called_in_order(inst: Instruction) -> list[tuple[str, Computation]]:
    roles = sorted(inst.called, key=_role_key)
    return [(r, inst.called[r]) for r in roles]


def _role_key(role: str) -> tuple[int, int]:
    if role.startswith("branch_") and role[7:].isdigit():
        return (len(_CALL_ROLE_ORDER), int(role[7:]))
    if role not in _CALL_ROLE_ORDER:
        raise ValueError(f"called-computation role '{role}' has no HLO text form")
    return (_CALL_ROLE_ORDER.index(role), 0)


def _clean_name(name: str) -> str:
    name = re.sub(r"[^\w.\-]", "_", name) or "_"
    return name if _PRINTABLE_NAME_RE.fullmatch(name) else "_" + name


class _Names:
    """Printable names, unique across the module (XLA requires it); renames are deterministic."""

    def __init__(self, comps: list[Computation]):
        self.by_id: dict[int, str] = {}
        used: set[str] = set()
        for comp in comps:
            self._assign(comp, comp.name, used)
        used_insts: set[str] = set()
        for comp in comps:
            for inst in comp.instructions:
                self._assign(inst, inst.name, used_insts)

    def _assign(self, obj, name: str, used: set[str]) -> None:
        base = candidate = _clean_name(name)
        k = 1
        while candidate in used:
            candidate = f"{base}.dup{k}"
            k += 1
        used.add(candidate)
        self.by_id[id(obj)] = candidate

    def __call__(self, obj) -> str:
        if id(obj) not in self.by_id:  # a callee printed on its own by computation_to_text
            return _clean_name(obj.name)
        return self.by_id[id(obj)]


def _aliases_text(aliases: list[Alias]) -> str:
    if not aliases:
        return ""
    entries = ", ".join(
        f"{{{','.join(map(str, a.output_index))}}}: ({a.parameter_number}, "
        f"{{{','.join(map(str, a.parameter_index))}}}, may-alias)" for a in aliases)
    return f", input_output_alias={{ {entries} }}"


def _computation_text(comp: Computation, names: _Names, is_entry: bool) -> str:
    params = ", ".join(f"{names(p)}: {p.shape}" for p in comp.parameters)
    head = f"{'ENTRY ' if is_entry else ''}%{names(comp)} ({params}) -> {comp.root.shape} {{"
    body = [_instruction_text(inst, names, inst is comp.root) for inst in comp.instructions]
    return "\n".join([head] + body + ["}"])


def _instruction_text(inst: Instruction, names: _Names, is_root: bool) -> str:
    if inst.opcode == "parameter":
        args = str(inst.attrs["number"])
    elif inst.opcode == "constant":
        args = _literal_text(inst.attrs["value"], inst.shape)
    else:
        args = ", ".join(f"{op.shape} %{names(op)}" for op in inst.operands)
    attrs = _attr_texts(inst) + _called_texts(inst, names) + _metadata_texts(inst.metadata)
    tail = "".join(", " + a for a in attrs)
    return f"  {'ROOT ' if is_root else ''}%{names(inst)} = {inst.shape} {inst.opcode}({args}){tail}"


def _attr_texts(inst: Instruction) -> list[str]:
    out = []
    consumed = {"number", "value"}
    for keys, printer in _ATTR_PRINTERS:
        if all(k in inst.attrs for k in keys):
            text = printer(inst, *(inst.attrs[k] for k in keys))
            consumed.update(keys)
            if text:
                out.append(text)
    unknown = set(inst.attrs) - consumed
    if unknown:
        # printing must not lose attributes: the text is hashed into the executable-cache key
        raise ValueError(f"attribute(s) {sorted(unknown)} of {inst.describe()} have no HLO text form")
    return out


def _ints(values) -> str:
    return "{" + ",".join(str(int(v)) for v in values) + "}"


def _window_text(window) -> str:
    if not window:
        return "{}"
    parts = [("size", "x".join(str(d["size"]) for d in window))]
    columns = [("stride", lambda d: str(d["stride"]), "1"),
               ("pad", lambda d: f"{d['pad_low']}_{d['pad_high']}", "0_0"),
               ("lhs_dilate", lambda d: str(d["base_dilation"]), "1"),
               ("rhs_dilate", lambda d: str(d["window_dilation"]), "1"),
               ("rhs_reversal", lambda d: str(int(bool(d["reversal"]))), "0")]
    for key, fmt, default in columns:
        vals = [fmt(d) for d in window]
        if any(v != default for v in vals):  # XLA omits all-default fields
            parts.append((key, "x".join(vals)))
    return "{" + " ".join(f"{k}={v}" for k, v in parts) + "}"


def _dim_labels_text(dnums: dict) -> str:
    def labels(rank_keys: tuple[str, str], letters: str, spatial_key: str) -> str:
        spatial = dnums[spatial_key]
        chars = ["?"] * (2 + len(spatial))
        chars[dnums[rank_keys[0]]], chars[dnums[rank_keys[1]]] = letters
        for k, d in enumerate(spatial):
            chars[d] = str(k)
        return "".join(chars)

    lhs = labels(("input_batch_dimension", "input_feature_dimension"), "bf", "input_spatial_dimensions")
    rhs = labels(("kernel_input_feature_dimension", "kernel_output_feature_dimension"), "io",
                 "kernel_spatial_dimensions")
    out = labels(("output_batch_dimension", "output_feature_dimension"), "bf", "output_spatial_dimensions")
    return f"{lhs}_{rhs}->{out}"


def _quote(s: str) -> str:
    """C-style escaping as XLA does, so that the parser's unescape reproduces ``s``."""
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _slice_text(inst, starts, limits, strides) -> str:
    return "slice={" + ", ".join(f"[{a}:{b}:{c}]" for a, b, c in zip(starts, limits, strides)) + "}"


def _padding_text(inst, padding) -> str:
    return "padding=" + "x".join(f"{lo}_{hi}" + (f"_{it}" if it else "") for lo, hi, it in padding)


def _flag(key: str):
    """A boolean printed only when true, as XLA does."""
    return ((key,), lambda inst, v: f"{key}=true" if v else "")


def _int_list_attr(key: str, skip_empty: bool = False):
    return ((key,), lambda inst, v: "" if skip_empty and not v else f"{key}={_ints(v)}")


def _int_attr(key: str, text_key: str | None = None, default: int | None = None):
    return ((key,), lambda inst, v: "" if v == default else f"{text_key or key}={int(v)}")


# (IR keys, printer) in print order; a printer returning '' prints nothing (the parser restores defaults).
_ATTR_PRINTERS: list[tuple[tuple[str, ...], Callable[..., str]]] = [
    (("kind",), lambda inst, v: f"kind={FUSION_KIND_TO_XLA.get(v, v)}"),
    _int_attr("iota_dimension"),
    (("dimension",), lambda inst, v: f"dimensions={{{int(v)}}}"),
    _int_list_attr("dimensions"),
    (("starts", "limits", "strides"), _slice_text),
    (("padding",), _padding_text),
    (("window",), lambda inst, v: f"window={_window_text(v)}"),
    (("dnums",), lambda inst, v: f"dim_labels={_dim_labels_text(v)}"),
    _int_attr("feature_group_count", default=1),
    _int_attr("batch_group_count", default=1),
    _int_list_attr("lhs_batch_dims", skip_empty=True),
    _int_list_attr("lhs_contracting_dims"),
    _int_list_attr("rhs_batch_dims", skip_empty=True),
    _int_list_attr("rhs_contracting_dims"),
    (("direction",), lambda inst, v: f"direction={v}"),
    (("compare_type",), lambda inst, v: f"type={v}"),
    _int_attr("index"),
    _int_list_attr("offset_dims"),
    _int_list_attr("collapsed_slice_dims"),
    _int_list_attr("start_index_map"),
    _int_list_attr("operand_batching_dims", skip_empty=True),
    _int_list_attr("start_indices_batching_dims", skip_empty=True),
    _int_list_attr("update_window_dims"),
    _int_list_attr("inserted_window_dims"),
    _int_list_attr("scatter_dims_to_operand_dims"),
    _int_list_attr("input_batching_dims", skip_empty=True),
    _int_list_attr("scatter_indices_batching_dims", skip_empty=True),
    _int_attr("index_vector_dim"),
    (("slice_sizes",), lambda inst, v:
        f"{'dynamic_slice_sizes' if inst.opcode == 'dynamic-slice' else 'slice_sizes'}={_ints(v)}"),
    _flag("indices_are_sorted"),
    _flag("unique_indices"),
    _flag("is_stable"),
    (("distribution",), lambda inst, v: f"distribution=rng_{v}"),
    (("algorithm",), lambda inst, v: f"algorithm=rng_{v}"),
    (("target",), lambda inst, v: f"custom_call_target={_quote(v)}"),
    (("backend_config",), lambda inst, v: f"backend_config={_quote(v)}" if v else ""),
    (("epsilon",), lambda inst, v: f"epsilon={_float_text(np.float32(v))}"),
    _int_attr("feature_index"),
    _int_attr("exponent_bits"),
    _int_attr("mantissa_bits"),
]


def _called_texts(inst: Instruction, names: _Names) -> list[str]:
    called = _called_in_order(inst)
    branches = [c for r, c in called if r.startswith("branch_")]
    out = []
    for role, comp in called:
        if role.startswith("branch_"):
            continue
        key = {"fused": "calls"}.get(role, role)
        out.append(f"{key}=%{names(comp)}")
    if branches:
        if [r for r, _ in called if r.startswith("branch_")] != [f"branch_{k}" for k in range(len(branches))]:
            raise ValueError(f"{inst.describe()}: branch roles must be branch_0..branch_N")
        pred = inst.operands and inst.operands[0].shape.dtype == "pred"
        if pred and len(branches) == 2:
            # XLA's parser wants true/false_computation for a pred predicate
            out += [f"true_computation=%{names(branches[0])}", f"false_computation=%{names(branches[1])}"]
        else:
            out.append("branch_computations={" + ", ".join(f"%{names(c)}" for c in branches) + "}")
    return out


def _metadata_texts(metadata: dict) -> list[str]:
    items = [f"{k}={_quote(str(metadata[k]))}" for k in ("op_type", "op_name", "source_file") if metadata.get(k)]
    if metadata.get("source_line"):
        items.append(f"source_line={int(metadata['source_line'])}")
    return [f"metadata={{{' '.join(items)}}}"] if items else []


# -- literals --
def _literal_text(value, shape: Shape) -> str:
    if shape.is_tuple:
        return "( " + ", ".join(_literal_text(v, s) for v, s in zip(value, shape.tuple_shapes)) + " )"
    arr = np.asarray(value, dtype=shape.np_dtype).reshape(shape.dims)
    flat = _element_texts(arr.reshape(-1))
    if not shape.dims:
        return flat[0]
    return _nest(flat, shape.dims)


def _nest(flat: list[str], dims: tuple[int, ...]) -> str:
    """``{1, 2}`` for rank 1, ``{ {1, 2}, {3, 4} }`` above (XLA's layout of nested braces)."""
    if len(dims) == 1:
        return "{" + ", ".join(flat) + "}"
    if dims[0] == 0:
        return "{}"
    step = len(flat) // dims[0] if dims[0] else 0
    rows = [_nest(flat[k * step:(k + 1) * step], dims[1:]) for k in range(dims[0])]
    return "{ " + ", ".join(rows) + " }"


def _element_texts(flat: np.ndarray) -> list[str]:
    if flat.dtype == np.bool_:
        return ["true" if v else "false" for v in flat.tolist()]
    if flat.dtype.kind in "iu":
        return [str(v) for v in flat.tolist()]
    texts = [_float_text(v) for v in flat]
    # The parser reads decimal -> f64 -> dtype; where a shortest string does not survive that double
    # rounding, print the exact f64 value instead (every f16/f32 value is exact in f64).
    back = _floats(texts, flat.dtype)
    same = (back.view(f"u{flat.dtype.itemsize}") == flat.view(f"u{flat.dtype.itemsize}")) | np.isnan(flat)
    for k in np.flatnonzero(~same):
        texts[k] = repr(float(flat[k]))
    return texts


def _float_text(x) -> str:
    """Shortest decimal that identifies ``x`` in its own precision (numpy's str), XLA-style ('1' not '1.0')."""
    if np.isnan(x):
        return "-nan" if np.signbit(x) else "nan"
    text = str(x)
    return text[:-2] if text.endswith(".0") else text
