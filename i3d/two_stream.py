"""The two-stream I3D: RGB and optical-flow InceptionI3d, logits summed.

The stream vocabulary (names, channels, scopes) lives in `i3d.streams`, which
imports no TensorFlow; this module is the TensorFlow model over it.

Each stream is an `InceptionI3d` built under DeepMind's scope (`RGB/` or
`Flow/`), so its variables carry the names of DeepMind's checkpoints, e.g.
`RGB/inception_i3d/Logits/Conv3d_0c_1x1/conv_3d/w`. The streams' class logits
(averaged over time) are summed into the joint logits, then a softmax gives
probabilities, as in DeepMind's `evaluate_sample.py`.
"""

from typing import Dict, Mapping, Sequence

import sonnet as snt
import tensorflow as tf

from i3d import model as i3d_model
from i3d import streams as streams_lib


def joint_logits(stream_logits: Mapping[str, tf.Tensor]) -> tf.Tensor:
  """The two-stream fusion: the sum of the streams' [B, K] logits."""
  return tf.add_n(list(stream_logits.values()))


class TwoStreamI3d(snt.Module):
  """One or two I3D streams whose logits are summed."""

  def __init__(self, num_classes: int,
               streams: Sequence[str] = ("rgb", "flow"),
               name: str = "two_stream_i3d"):
    """Constructs the streams.

    Args:
      num_classes: number of classes of each stream's logits layer.
      streams: "rgb" and/or "flow".
      name: module name (it does not prefix the streams' variables).
    """
    super().__init__(name=name)
    self.num_classes = num_classes
    self.streams: Dict[str, i3d_model.InceptionI3d] = {}
    for stream in streams_lib.parse_streams(streams):
      # An absolute scope keeps DeepMind's names whatever encloses this module.
      with tf.name_scope(streams_lib.SCOPES[stream] + "/"):
        self.streams[stream] = i3d_model.InceptionI3d(num_classes)

  def __call__(self, inputs: Mapping[str, tf.Tensor], is_training: bool,
               dropout_keep_prob: float = 1.0) -> Dict[str, tf.Tensor]:
    """Computes each stream's logits and their sum.

    Args:
      inputs: {"rgb": [B, T, H, W, 3], "flow": [B, T, H, W, 2]} in [-1, 1].
      is_training: batch-norm mode and dropout.
      dropout_keep_prob: probability of keeping activations before the logits.

    Returns:
      {stream: [B, num_classes] logits, ..., "joint": their sum}.
    """
    logits = {stream: model(inputs[stream], is_training=is_training,
                            dropout_keep_prob=dropout_keep_prob)[0]
              for stream, model in self.streams.items()}
    logits[streams_lib.JOINT] = joint_logits(logits)
    return logits
