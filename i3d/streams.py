"""The stream vocabulary of the two-stream I3D: names, channels, scopes, fusion.

The model has an RGB stream and an optical-flow stream. Each is an
`InceptionI3d` built under DeepMind's scope (`RGB/` or `Flow/`, see
`i3d.two_stream.TwoStreamI3d`); its input has 3 channels (RGB) or 2 (flow x and
y). The joint model's logits are the sum of the streams' logits, and its
probabilities the softmax of that sum, as in DeepMind's `evaluate_sample.py`
(`i3d.two_stream.joint_logits` in TensorFlow, `i3d.eval.metrics.fuse_streams`
in numpy).

This module imports neither TensorFlow nor OpenCV: video worker processes and
the configuration use it and must start quickly.
"""

from typing import Dict, Sequence

# The streams, in the order every stream selection is returned in.
STREAMS: tuple[str, ...] = ("rgb", "flow")
# Input channels of each stream: RGB, and flow's x and y displacements.
CHANNELS: Dict[str, int] = {"rgb": 3, "flow": 2}
# DeepMind's variable scope of each stream (`RGB/inception_i3d/...`).
SCOPES: Dict[str, str] = {"rgb": "RGB", "flow": "Flow"}
# The name of the fused (summed) logits, and the `--stream` value that selects
# both streams.
JOINT = "joint"


def parse_streams(spec: str | Sequence[str]) -> tuple[str, ...]:
  """Turns a stream selection into the tuple of its streams.

  Args:
    spec: "joint" (both streams), a stream name ("rgb", "flow"), names joined
      by commas ("rgb,flow"), or a sequence of names.

  Returns:
    The selected streams, each once, in `STREAMS` order.

  Raises:
    ValueError: for an empty selection or an unknown stream.
  """
  if isinstance(spec, str):
    spec = STREAMS if spec == JOINT else tuple(spec.split(","))
  streams = tuple(s.strip() for s in spec)
  unknown = [s for s in streams if s not in STREAMS]
  if unknown or not streams:
    raise ValueError(f"Unknown stream(s) {unknown or list(spec)}: use rgb, "
                     "flow or joint")
  return tuple(s for s in STREAMS if s in streams)


def stream_of_channels(channels: int) -> str:
  """Returns the stream whose inputs have `channels` channels (3 or 2).

  Raises:
    ValueError: for another channel count.
  """
  for stream, stream_channels in CHANNELS.items():
    if stream_channels == channels:
      return stream
  raise ValueError(f"no stream has {channels} channels (rgb 3, flow 2)")
