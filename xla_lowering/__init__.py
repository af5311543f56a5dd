"""HLO IR -> passes -> lowering -> IPU program. Never imports TensorFlow."""

# The compiler's version, part of every executable-cache key: bump it when a change to the passes, the lowering
# rules or the planners changes the executables they produce, so that no cache serves an executable of an older
# compiler. (The on-disk cache also keys on a digest of the compiler's sources, for changes made between bumps.)
COMPILER_VERSION = "0.1.0"
