"""HLO IR -> passes -> lowering -> IPU program. Never imports TensorFlow."""
