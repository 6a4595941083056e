"""Running a trained or Kinetics I3D on clips: model loading, logits, top-k."""

import dataclasses
import os
from typing import Dict, List, Mapping, Optional, Sequence

import cv2
import numpy as np
import tensorflow as tf

from i3d import checkpoints
from i3d import two_stream


class ClipError(ValueError):
  """A preprocessed clip file cannot be used as model input."""


def _check_clip(clip: np.ndarray, path: str) -> np.ndarray:
  if clip.ndim == 5:
    if clip.shape[0] != 1:
      raise ClipError(f"{path}: a 5-D clip must have batch size 1, got shape "
                      f"{clip.shape}")
    clip = clip[0]
  if clip.ndim != 4 or clip.shape[-1] not in (2, 3) or 0 in clip.shape:
    raise ClipError(f"{path}: expected a (T, H, W, C) or (1, T, H, W, C) clip "
                    f"with C = 3 (RGB) or 2 (flow), got shape {clip.shape}")
  if not np.issubdtype(clip.dtype, np.floating):
    raise ClipError(f"{path}: expected float values in [-1, 1], got dtype "
                    f"{clip.dtype}")
  if not np.isfinite(clip).all() or np.abs(clip).max() > 1.0 + 1e-3:
    raise ClipError(f"{path}: values must be finite and in [-1, 1] (found "
                    f"[{np.nanmin(clip):.3g}, {np.nanmax(clip):.3g}])")
  return clip.astype(np.float32)


def load_npy_clip(path: str) -> np.ndarray:
  """Loads a preprocessed clip saved with `np.save` (DeepMind's sample format).

  Args:
    path: a .npy file holding (T, H, W, C) or (1, T, H, W, C) floats in
      [-1, 1]; C = 3 for RGB, 2 for flow.

  Returns:
    The (T, H, W, C) float32 clip.

  Raises:
    ClipError: if the file is missing, not a numpy array or of the wrong shape.
  """
  try:
    clip = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    raise ClipError(f"{path}: cannot read as a .npy array ({e})") from e
  return _check_clip(clip, path)


def load_gif_clip(path: str, channels: int = 3) -> np.ndarray:
  """Loads a clip rendered as a GIF of (x + 1) / 2, like DeepMind's samples.

  Args:
    path: the GIF; for flow the first two colour channels hold x and y.
    channels: 3 for RGB, 2 for flow.

  Returns:
    The (T, H, W, channels) float32 clip in [-1, 1].

  Raises:
    ClipError: if the GIF cannot be decoded.
  """
  capture = cv2.VideoCapture(path)
  frames = []
  while True:
    ok, frame = capture.read()
    if not ok:
      break
    frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)[..., :channels])
  capture.release()
  if not frames:
    raise ClipError(f"{path}: no frames could be decoded")
  return np.stack(frames).astype(np.float32) / 255.0 * 2.0 - 1.0


def stream_of_clip(clip: np.ndarray) -> str:
  """Returns "rgb" or "flow" from a clip's channel count."""
  return {3: "rgb", 2: "flow"}[clip.shape[-1]]


@dataclasses.dataclass
class Prediction:
  """One class of a top-k list."""
  label: str
  index: int
  logit: float
  probability: float


def top_k(logits: np.ndarray, classes: Sequence[str],
          k: int = 5) -> List[Prediction]:
  """Returns the k most probable classes of one logits vector."""
  logits = np.asarray(logits, dtype=np.float64)
  probabilities = np.exp(logits - logits.max())
  probabilities /= probabilities.sum()
  order = np.argsort(-logits, kind="stable")[:k]
  return [Prediction(classes[i], int(i), float(logits[i]),
                     float(probabilities[i])) for i in order]


def format_deepmind(logits: np.ndarray, classes: Sequence[str],
                    k: int = 20) -> str:
  """Formats results as DeepMind's `evaluate_sample.py` prints them."""
  logits32 = np.asarray(logits, dtype=np.float32)
  lines = [f"Norm of logits: {np.linalg.norm(logits32):f}", "",
           "Top classes and probabilities"]
  for p in top_k(logits32, classes, k):
    lines.append(f"{str(np.float32(p.probability))} {str(np.float32(p.logit))} "
                 f"{p.label}")
  return "\n".join(lines)


def prediction_json(logits: np.ndarray, classes: Sequence[str],
                    k: int = 5) -> Dict[str, object]:
  """The JSON record of one prediction: norm of logits and the top k."""
  return {"logits_norm": float(np.linalg.norm(np.asarray(logits, np.float32))),
          "top_k": [dataclasses.asdict(p) for p in top_k(logits, classes, k)]}


class Classifier:
  """A TwoStreamI3d with restored weights and a compiled forward pass."""

  def __init__(self, model: two_stream.TwoStreamI3d, classes: Sequence[str]):
    """Wraps a model whose weights are already in place.

    Args:
      model: the model.
      classes: class names in logit order.

    Raises:
      ValueError: if the class count differs from the model's.
    """
    if len(classes) != model.num_classes:
      raise ValueError(f"{len(classes)} class names for a model with "
                       f"{model.num_classes} logits")
    self.model = model
    self.classes = list(classes)
    self.streams = tuple(model.streams)
    # Clips differ in length: relax shapes instead of retracing per length.
    self._forward = tf.function(self._logits, reduce_retracing=True)

  def _logits(self, inputs: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    return self.model(inputs, is_training=False)

  @classmethod
  def from_deepmind_checkpoints(cls, stream_checkpoints: Mapping[str, str],
                                classes: Sequence[str]) -> "Classifier":
    """Builds a classifier from DeepMind-layout checkpoints, logits included.

    Args:
      stream_checkpoints: {"rgb": path, "flow": path}, one or both.
      classes: the checkpoints' class names.

    Returns:
      The classifier.

    Raises:
      CheckpointError: if a checkpoint does not fit.
    """
    model = two_stream.TwoStreamI3d(len(classes), tuple(stream_checkpoints))
    for stream, path in stream_checkpoints.items():
      checkpoints.restore(model.streams[stream], stream, path,
                          include_logits=True)
    return cls(model, classes)

  def logits(self, clips: Mapping[str, np.ndarray],
             any_length: bool = False) -> Dict[str, np.ndarray]:
    """Computes logits for a batch of clips.

    Args:
      clips: {stream: [B, T, H, W, C]} for each of the classifier's streams.
      any_length: run one graph, traced once, for every batch size and clip
        length (the logits pool takes a dynamic length) instead of a graph per
        input shape: for many videos of different lengths, where tracing a
        graph per length would take longer than running it. Same logits up to
        float rounding.

    Returns:
      {stream: [B, K], ..., "joint": [B, K]} as numpy arrays.

    Raises:
      ValueError: if a stream's clip is missing.
    """
    missing = [s for s in self.streams if s not in clips]
    if missing:
      raise ValueError(f"No input for stream(s) {missing}")
    inputs = {s: tf.convert_to_tensor(clips[s], tf.float32)
              for s in self.streams}
    # A clip of a fixed shape runs the static-shape graph (the logits pool
    # needs static sizes); reduce_retracing would otherwise generalise them.
    outputs = self._forward.get_concrete_function(
        {s: tf.TensorSpec([None, None, *x.shape[2:]] if any_length else x.shape,
                          tf.float32) for s, x in inputs.items()}
    )(inputs)
    return {name: value.numpy() for name, value in outputs.items()}


def read_file_list(paths: Sequence[str],
                   extensions: Optional[Sequence[str]] = None) -> List[str]:
  """Expands folders in a list of paths into their files (sorted).

  Args:
    paths: files and folders.
    extensions: if given, only files with these (lower-case) extensions are
      taken from folders.

  Returns:
    File paths.
  """
  files = []
  for path in paths:
    if os.path.isdir(path):
      for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if os.path.isfile(full) and (
            extensions is None or
            os.path.splitext(name)[1].lower() in extensions):
          files.append(full)
    else:
      files.append(path)
  return files
