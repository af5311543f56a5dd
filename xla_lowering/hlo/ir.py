"""The project's HLO IR: modules, computations, instructions and shapes.

Built from an ``HloModuleProto`` (``tf_ipu.hlo_proto``) or from HLO text (``xla_lowering.hlo.text``).
Attributes are plain Python values (ints, tuples, dicts, NumPy arrays for literals) so that passes,
the reference evaluator and the lowering never see protobuf objects.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# --- element types -------------------------------------------------------------------------------
# HLO primitive type name -> NumPy dtype. 'pred' is stored as one byte holding 0 or 1.
NUMPY_DTYPES = {
    "pred": np.dtype(np.bool_), "s8": np.dtype(np.int8), "u8": np.dtype(np.uint8),
    "s16": np.dtype(np.int16), "u16": np.dtype(np.uint16), "s32": np.dtype(np.int32),
    "u32": np.dtype(np.uint32), "s64": np.dtype(np.int64), "u64": np.dtype(np.uint64),
    "f16": np.dtype(np.float16), "f32": np.dtype(np.float32), "f64": np.dtype(np.float64),
}
HLO_DTYPES = {v: k for k, v in NUMPY_DTYPES.items()}
FLOAT_TYPES = ("f16", "f32", "f64")
INT_TYPES = ("s8", "u8", "s16", "u16", "s32", "u32", "s64", "u64")


def np_dtype(dtype: str) -> np.dtype:
    try:
        return NUMPY_DTYPES[dtype]
    except KeyError:
        raise NotImplementedError(f"element type {dtype!r} is not supported") from None


def hlo_dtype(dtype) -> str:
    return HLO_DTYPES[np.dtype(dtype)]


# --- shapes --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    """An array shape (dtype + dims) or a tuple of shapes (dtype == 'tuple')."""
    dtype: str
    dims: tuple[int, ...] = ()
    tuple_shapes: tuple["Shape", ...] = ()

    @staticmethod
    def tuple(shapes) -> "Shape":
        return Shape("tuple", (), tuple(shapes))

    @property
    def is_tuple(self) -> bool:
        return self.dtype == "tuple"

    @property
    def rank(self) -> int:
        return len(self.dims)

    @property
    def size(self) -> int:
        return int(np.prod(self.dims, dtype=np.int64))

    @property
    def np_dtype(self) -> np.dtype:
        return np_dtype(self.dtype)

    @property
    def itemsize(self) -> int:
        return self.np_dtype.itemsize

    @property
    def nbytes(self) -> int:
        if self.is_tuple:
            return sum(s.nbytes for s in self.tuple_shapes)
        return self.size * self.itemsize

    def with_dims(self, dims) -> "Shape":
        return Shape(self.dtype, tuple(int(d) for d in dims))

    def with_dtype(self, dtype: str) -> "Shape":
        return Shape(dtype, self.dims)

    def __str__(self) -> str:
        if self.is_tuple:
            return "(" + ", ".join(str(s) for s in self.tuple_shapes) + ")"
        return f"{self.dtype}[{','.join(str(d) for d in self.dims)}]"


# --- instructions --------------------------------------------------------------------------------
_ids = itertools.count(1)


@dataclass(eq=False)
class Instruction:
    """One HLO instruction. ``operands`` are other instructions of the same computation.

    ``attrs`` holds the opcode's attributes as plain values, e.g. ``dimensions`` for broadcast/reduce,
    ``value`` (a NumPy array) for constant, ``lhs_contracting_dims`` etc. for dot. ``called`` maps a
    role ("to_apply", "condition", "body", "true", "false", "scatter", "select", "branch_0", ...) to a
    called computation. ``metadata`` keeps the TF op name/type and source position.
    """
    opcode: str
    shape: Shape
    operands: list["Instruction"] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    called: dict[str, "Computation"] = field(default_factory=dict)
    name: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    id: int = field(default_factory=lambda: next(_ids))

    def __post_init__(self):
        if not self.name:
            self.name = f"{self.opcode}.{self.id}"

    @property
    def op_name(self) -> str:
        """The TensorFlow op this instruction came from, or '' when unknown."""
        return self.metadata.get("op_name", "")

    def describe(self) -> str:
        """One line for error messages: opcode, shape and TF origin."""
        origin = self.op_name
        op_type = self.metadata.get("op_type")
        where = f" from TF op '{origin}'" + (f" ({op_type})" if op_type else "") if origin else ""
        src = self.metadata.get("source_file")
        if src:
            where += f" at {src}:{self.metadata.get('source_line', '?')}"
        return f"HLO '{self.opcode}' %{self.name} {self.shape}{where}"

    def __repr__(self) -> str:
        return f"<{self.opcode} %{self.name} {self.shape}>"


@dataclass(eq=False)
class Computation:
    """An ordered (topologically sorted) list of instructions with parameters and a root."""
    name: str
    instructions: list[Instruction]
    root: Instruction

    @property
    def parameters(self) -> list[Instruction]:
        params = [i for i in self.instructions if i.opcode == "parameter"]
        return sorted(params, key=lambda i: i.attrs["number"])

    def users(self) -> dict[Instruction, list[Instruction]]:
        out: dict[Instruction, list[Instruction]] = {i: [] for i in self.instructions}
        for inst in self.instructions:
            for op in inst.operands:
                out.setdefault(op, []).append(inst)
        return out

    def called_computations(self) -> list["Computation"]:
        seen: dict[int, Computation] = {}
        for inst in self.instructions:
            for comp in inst.called.values():
                if id(comp) not in seen:
                    seen[id(comp)] = comp
                    for sub in comp.called_computations():
                        seen.setdefault(id(sub), sub)
        return list(seen.values())

    def resort(self) -> None:
        """Re-establish topological order and drop instructions the root does not reach."""
        order: list[Instruction] = []
        state: dict[int, int] = {}
        params = [i for i in self.instructions if i.opcode == "parameter"]
        stack = [(self.root, False)]
        while stack:
            inst, done = stack.pop()
            if done:
                if state.get(inst.id) != 2:
                    state[inst.id] = 2
                    order.append(inst)
                continue
            if state.get(inst.id):
                continue
            state[inst.id] = 1
            stack.append((inst, True))
            for op in reversed(inst.operands):
                if not state.get(op.id):
                    stack.append((op, False))
        kept = {i.id for i in order}
        # parameters always stay, even when unused, so that the signature does not change
        self.instructions = [p for p in params if p.id not in kept] + order

    def to_text(self) -> str:
        from .text import computation_to_text
        return computation_to_text(self)


@dataclass(frozen=True)
class Alias:
    """An entry of ``input_output_alias``: output tuple index <- parameter (resource variables)."""
    output_index: tuple[int, ...]
    parameter_number: int
    parameter_index: tuple[int, ...] = ()


@dataclass(eq=False)
class Module:
    name: str
    entry: Computation
    aliases: list[Alias] = field(default_factory=list)

    def computations(self) -> list[Computation]:
        return self.entry.called_computations() + [self.entry]

    def to_text(self) -> str:
        from .text import module_to_text
        return module_to_text(self)

    def fingerprint(self) -> str:
        """A stable hash of the module's text, used as the executable-cache key."""
        import hashlib
        return hashlib.sha256(self.to_text().encode()).hexdigest()

    def canonical_fingerprint(self) -> str:
        """A hash of the module's text with the module and its computations renamed by position.

        TensorFlow names them with process-wide counters (``a_inference_f_92__``, ``while_body_11_const_0__``), so
        the same function traced again, or in another process, has other names and another ``fingerprint()``; this
        one is the same (the on-disk executable cache keys on it). Renaming is one-to-one, to names HLO text
        cannot contain, so different modules keep different fingerprints.
        """
        import hashlib
        import re
        from .text import _Names, _post_order        # the names module_to_text prints
        comps = _post_order(self.entry)
        printed = _Names(comps)
        names = {printed(c): f"#{i}" for i, c in enumerate(comps)}
        text = re.sub(r"%([\w.\-]+)", lambda m: "%" + names.get(m.group(1), m.group(1)), self.to_text())
        text = re.sub(r"\AHloModule [\w.\-]+", "HloModule #module", text)
        return hashlib.sha256(text.encode()).hexdigest()


def parameter_shapes(module: Module) -> list[Shape]:
    return [p.shape for p in module.entry.parameters]
