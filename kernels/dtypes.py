"""Element-type codes shared by the Python side and the codelets (kernels/codelets/_common.pxd)."""
import numpy as np

CODES = {"pred": 0, "s8": 1, "u8": 2, "s16": 3, "u16": 4, "s32": 5, "u32": 6, "s64": 7, "u64": 8,
         "f16": 9, "f32": 10, "f64": 11}
NUMPY = {"pred": np.bool_, "s8": np.int8, "u8": np.uint8, "s16": np.int16, "u16": np.uint16, "s32": np.int32,
         "u32": np.uint32, "s64": np.int64, "u64": np.uint64, "f16": np.float16, "f32": np.float32,
         "f64": np.float64}
FLOATS = ("f16", "f32", "f64")


def code(dtype: str) -> int:
    try:
        return CODES[dtype]
    except KeyError:
        raise NotImplementedError(f"element type {dtype!r} is not supported on the simulated IPU") from None


def itemsize(dtype: str) -> int:
    return np.dtype(NUMPY[dtype]).itemsize


def is_float(dtype: str) -> bool:
    return dtype in FLOATS
