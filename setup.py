"""Builds the simulated IPU's Cython codelets (kernels/codelets/*.pyx) with OpenMP.

Set TFIPU_DEBUG=1 when installing to build with bounds checking and without optimisation.
"""
import os
import sys

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("TFIPU_DEBUG", "") not in ("", "0")
CODELETS = ["expr", "copy", "matmul", "reduce", "rng", "dynamic", "firstfit", "copyplan"]

# per codelet: the expression loops call sqrt, which vectorizes only when it need not set errno (no codelet
# reads errno; the values are the same)
FLAGS = {"expr": ["-fno-math-errno"]}

if sys.platform == "darwin":
    omp_compile, omp_link = ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
else:
    omp_compile, omp_link = ["-fopenmp"], ["-fopenmp"]

extensions = [
    Extension(
        f"kernels.codelets.{name}",
        [f"kernels/codelets/{name}.pyx"],
        include_dirs=["kernels/codelets"],
        extra_compile_args=omp_compile + (["-O0", "-g"] if DEBUG else ["-O3"]) + FLAGS.get(name, []),
        extra_link_args=omp_link,
    )
    for name in CODELETS
]

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": DEBUG,
}

setup(ext_modules=cythonize(extensions, compiler_directives=directives))
