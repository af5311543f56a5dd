"""Opcode table of the expression codelet (kernels/codelets/expr.pyx) and each op's cost.

An instruction row is [op, dst, a, b, c, dst_dtype, src_dtype]; LOAD reads input ``a``; CONST reads constant
``a``. The compiler (xla_lowering/lower/expression.py) turns HLO elementwise ops into these rows.

Costs are thread cycles per vector of elements (2 x f32 or 4 x f16 a cycle on the 64-bit datapath): simple
ALU ops take 1; division, square roots and transcendentals are software sequences on the IPU's float unit,
for which we use our own estimates (no published per-op figures).
"""
OPS = {
    "load": 0, "const": 1, "copy": 2, "convert": 3, "negate": 4, "abs": 5, "exponential": 6,
    "exponential-minus-one": 7, "log": 8, "log-plus-one": 9, "logistic": 10, "tanh": 11, "sqrt": 12,
    "rsqrt": 13, "cbrt": 14, "sine": 15, "cosine": 16, "tan": 17, "floor": 18, "ceil": 19,
    "round-nearest-afz": 20, "round-nearest-even": 21, "sign": 22, "not": 23, "is-finite": 24, "erf": 25,
    "popcnt": 26, "count-leading-zeros": 27,
    "add": 40, "subtract": 41, "multiply": 42, "divide": 43, "remainder": 44, "maximum": 45, "minimum": 46,
    "power": 47, "atan2": 48, "and": 49, "or": 50, "xor": 51, "shift-left": 52, "shift-right-logical": 53,
    "shift-right-arithmetic": 54,
    "EQ": 60, "NE": 61, "LT": 62, "LE": 63, "GT": 64, "GE": 65,
    "select": 70, "clamp": 71, "bitcast-convert": 72,
}

UNARY = {name for name, code in OPS.items() if 3 <= code < 40} | {"bitcast-convert"}
BINARY = {name for name, code in OPS.items() if 40 <= code < 60}

COST = {name: 1 for name in OPS}
COST.update({"load": 0, "const": 0, "copy": 0, "divide": 6, "remainder": 10, "sqrt": 6, "rsqrt": 6,
             "cbrt": 20, "exponential": 10, "exponential-minus-one": 12, "log": 10, "log-plus-one": 12,
             "logistic": 14, "tanh": 14, "sine": 16, "cosine": 16, "tan": 24, "erf": 20, "power": 24,
             "atan2": 24, "popcnt": 2, "count-leading-zeros": 2})
