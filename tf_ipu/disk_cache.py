"""The executable cache on disk: compiled executables shared between processes (``IPUConfig(executable_cache_dir=)``).

One file per key, ``<dir>/<sha256 of the key>.ipuexe`` in the executable file format (kernels/serialize.py),
written atomically (a temporary file, then a rename), so that concurrent processes never read half a file. The
key covers everything that changes an executable: the HLO module's canonical fingerprint (its text with the
module and computations renamed by position, as TensorFlow numbers them with process-wide counters),
``IPUConfig.cache_key()``, the file format version, ``xla_lowering.COMPILER_VERSION`` and a digest of the
compiler's sources (a compiler changed between version bumps must not be served its predecessor's executables).
The key is also stored in the file and compared when the file is read.

Nothing is silent: a compile because the cache has no entry is logged (logger ``tf_ipu``) at INFO; an entry that
exists but is refused (corrupt, truncated, another format or key) at WARNING with the reason, and it is then
compiled again and overwritten; a failure to write at WARNING. ``stats`` counts hits, misses, refusals and writes.
This module does not import TensorFlow.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from kernels import serialize
from kernels.executable import Executable
from xla_lowering import COMPILER_VERSION

log = logging.getLogger("tf_ipu")


@dataclass
class CacheStats:
    hits: int = 0          # executables read from the cache instead of compiled
    misses: int = 0        # compiles because the cache had no entry
    refused: int = 0       # entries that existed but could not be used (then compiled again)
    writes: int = 0        # entries written


@functools.cache
def compiler_digest() -> str:
    """SHA-256 of the compiler's and the device program's sources (xla_lowering/, kernels/)."""
    root = Path(__file__).resolve().parent.parent
    sha = hashlib.sha256()
    for package in ("xla_lowering", "kernels"):
        for path in sorted((root / package).rglob("*")):
            if path.suffix in (".py", ".pyx", ".pxd") and path.is_file():
                sha.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return sha.hexdigest()


class DiskCache:
    def __init__(self, directory: str | os.PathLike, producer: str):
        self.directory = Path(directory)
        self.producer = producer
        self.stats = CacheStats()

    @staticmethod
    def key(module, config_key: tuple) -> dict:
        """The key of ``module`` (HLO IR) compiled under a config with this ``cache_key()``."""
        return {"hlo": module.canonical_fingerprint(), "config": list(config_key),
                "format_version": serialize.FORMAT_VERSION, "compiler_version": COMPILER_VERSION,
                "compiler_digest": compiler_digest()}

    def path(self, key: dict) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return self.directory / f"{digest}{serialize.SUFFIX}"

    def get(self, key: dict, name: str) -> Executable | None:
        """The cached executable for ``key``, or None (logged: why there is none, or why it was refused)."""
        path = self.path(key)
        try:
            exe, info = serialize.read_executable(path)
        except FileNotFoundError:
            self.stats.misses += 1
            log.info("compiling '%s': the executable cache %s has no entry for it (%s)", name, self.directory,
                     path.name)
            return None
        except (serialize.ExecutableFormatError, OSError) as e:
            return self._refuse(path, name, str(e))
        stored = info.extra.get("cache_key")
        if stored != key:
            return self._refuse(path, name, f"it was written for another key ({_difference(stored, key)})")
        self.stats.hits += 1
        log.info("loaded '%s' from the executable cache (%s, written by %s): nothing to compile", name, path,
                 info.producer or "an unknown producer")
        return exe

    def _refuse(self, path: Path, name: str, reason: str) -> None:
        self.stats.refused += 1
        log.warning("compiling '%s' again: the executable cache entry %s was refused: %s", name, path, reason)
        return None

    def put(self, key: dict, exe: Executable, name: str) -> None:
        path = self.path(key)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            serialize.save_executable(exe, path, {"cache_key": key, "compiler_version": COMPILER_VERSION},
                                      producer=self.producer)
        except (OSError, TypeError) as e:
            log.warning("could not write '%s' to the executable cache %s: %s", name, self.directory, e)
            return
        self.stats.writes += 1


def _difference(stored, key: dict) -> str:
    if not isinstance(stored, dict):
        return "the file has no cache key"
    changed = [k for k in key if stored.get(k) != key[k]]
    return "different " + ", ".join(changed) if changed else "different key"
