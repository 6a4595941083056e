"""i3d-exercise: two-stream Inflated 3D ConvNets in Sonnet 2 for exercise-form videos."""

import os

# TensorFlow turns its oneDNN kernels on by default only on CPUs with AVX-512
# VNNI/BF16 or AMX; on an AVX2-only CPU I3D's frozen forward is 2.5x slower
# without them (benchmarks/README.md). TensorFlow reads this once, when it is
# first imported, so it takes effect only if i3d is imported first (the
# scripts, the tests' conftest.py and .bazelrc see to it);
# TF_ENABLE_ONEDNN_OPTS=0 in the environment keeps them off.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

__version__ = "0.1.0"
