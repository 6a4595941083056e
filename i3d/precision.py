"""Numeric precision of the graphs: bfloat16 inference on CPUs built for it.

Grappler's `auto_mixed_precision_onednn_bfloat16` rewrite runs a graph's
convolutions and matrix products in bfloat16 through oneDNN (numerically
sensitive ops stay float32). On CPUs with native bfloat16 arithmetic
(AVX512-BF16 or AMX) the I3D forward pass is 1.65-1.8x faster with logits
within 1-3% (benchmarks/README.md, finding 2); elsewhere Grappler leaves the
graph alone. It is for inference only: training steps rewritten to bfloat16
diverge (TF 2.21's oneDNN bfloat16 Conv3DBackpropFilter returns inf for small
feature maps).

Grappler options are process-wide settings that TensorFlow reads at each call
of a tf.function: a call made under other options optimises (and caches) the
function's graph again for them. So `grappler_options` sets them around the
calls that want them and restores them after, and the other calls - training
steps above all - keep running the float32 graph.
"""

import contextlib
from typing import Iterator, Mapping

from absl import logging
import tensorflow as tf

from i3d import config as config_lib

# /proc/cpuinfo flags of native bfloat16 arithmetic that oneDNN uses.
_BFLOAT16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_BFLOAT16_OPTION = "auto_mixed_precision_onednn_bfloat16"


def cpu_has_bfloat16(cpuinfo_path: str = "/proc/cpuinfo") -> bool:
  """Whether the CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16).

  Args:
    cpuinfo_path: the Linux CPU description to read.

  Returns:
    True if its flags name AVX512-BF16 or AMX-BF16; False otherwise, and
    where the file cannot be read (not Linux).
  """
  try:
    with open(cpuinfo_path, encoding="utf-8") as f:
      for line in f:
        if line.startswith("flags"):
          return bool(_BFLOAT16_CPU_FLAGS & set(line.split(":", 1)[1].split()))
  except OSError:
    pass
  return False


def use_inference_bfloat16(setting: str) -> bool:
  """Resolves an `inference_bfloat16` setting to on or off.

  Args:
    setting: one of `config.INFERENCE_BFLOAT16_SETTINGS`.

  Returns:
    Whether inference graphs should run with the bfloat16 rewrite.

  Raises:
    ValueError: for an unknown setting.
  """
  if setting not in config_lib.INFERENCE_BFLOAT16_SETTINGS:
    raise ValueError(f"inference_bfloat16 must be one of "
                     f"{', '.join(config_lib.INFERENCE_BFLOAT16_SETTINGS)}, "
                     f"got {setting!r}")
  if setting == "auto":
    return cpu_has_bfloat16()
  if setting == "on" and not cpu_has_bfloat16():
    logging.warning("inference_bfloat16=on on a CPU without AVX512-BF16 or "
                    "AMX: Grappler leaves the graphs in float32")
  return setting == "on"


@contextlib.contextmanager
def grappler_options(options: Mapping[str, bool]) -> Iterator[None]:
  """Sets Grappler options for the tf.function calls inside; restores them.

  Args:
    options: `tf.config.optimizer.set_experimental_options` settings.

  Yields:
    Nothing; the options hold until the block ends (also on an exception).
  """
  before = tf.config.optimizer.get_experimental_options()
  tf.config.optimizer.set_experimental_options(dict(options))
  try:
    yield
  finally:
    # An option never set reads as absent; its default is off.
    tf.config.optimizer.set_experimental_options(
        {name: before.get(name, False) for name in options})


def inference_precision(bfloat16: bool) -> contextlib.AbstractContextManager:
  """The context for inference calls: the bfloat16 rewrite, or nothing."""
  if bfloat16:
    return grappler_options({_BFLOAT16_OPTION: True})
  return contextlib.nullcontext()
