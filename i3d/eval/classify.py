"""Classifying videos: clip files, whole videos, sliding-window timelines.

`Classifier` runs a `TwoStreamI3d` (trained, or DeepMind's Kinetics models)
with a compiled forward pass; `classify_video` classifies a file (a long one
as a stream of clips whose logits are averaged, `iter_clip_windows` and
`classify_windows`) and `classify_timeline` in sliding windows, both through
the one
preprocessing path of `i3d.video.preprocess`; `top_k`, `prediction_json` and
`format_deepmind` present the results.
"""

import collections
import dataclasses
import os
from typing import (Any, Deque, Dict, Iterable, Iterator, List, Mapping,
                    Optional, Sequence, Tuple)

from absl import logging
import cv2
import numpy as np
import tensorflow as tf

from i3d import checkpoints
from i3d import labels as labels_lib
from i3d import precision
from i3d import streams as streams_lib
from i3d import two_stream
from i3d.eval import metrics
from i3d.video import preprocess as preprocess_lib

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


def _check_exists(path: str) -> None:
  if not os.path.isfile(path):
    raise ClipError(f"{path}: file not found")


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
  _check_exists(path)
  try:
    clip = np.load(path, allow_pickle=False)
  except (OSError, ValueError) as e:
    # numpy's own message suggests unpickling, which runs arbitrary code.
    raise ClipError(f"{path}: not a .npy array of numbers (np.save's "
                    "format)") from e
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
  _check_exists(path)
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
  return streams_lib.stream_of_channels(clip.shape[-1])


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

  def __init__(self, model: two_stream.TwoStreamI3d, classes: Sequence[str],
               bfloat16: bool = False):
    """Wraps a model whose weights are already in place.

    Args:
      model: the model.
      classes: class names in logit order.
      bfloat16: run the forward pass with the bfloat16 rewrite (see
        `i3d.precision`; `precision.use_inference_bfloat16` decides it from a
        setting).

    Raises:
      ValueError: if the class count differs from the model's.
    """
    if len(classes) != model.num_classes:
      raise ValueError(f"{len(classes)} class names for a model with "
                       f"{model.num_classes} logits")
    self.model = model
    self.classes = list(classes)
    self.streams = tuple(model.streams)
    self.bfloat16 = bfloat16
    # Clips differ in length: relax shapes instead of retracing per length.
    self._forward = tf.function(self._logits, reduce_retracing=True)

  def _logits(self, inputs: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    return self.model(inputs, is_training=False)

  @classmethod
  def from_deepmind_checkpoints(cls, stream_checkpoints: Mapping[str, str],
                                classes: Sequence[str],
                                bfloat16: bool = False) -> "Classifier":
    """Builds a classifier from DeepMind-layout checkpoints, logits included.

    Args:
      stream_checkpoints: {"rgb": path, "flow": path}, one or both.
      classes: the checkpoints' class names.
      bfloat16: as in the constructor.

    Returns:
      The classifier.

    Raises:
      CheckpointError: if a checkpoint does not fit.
    """
    model = two_stream.TwoStreamI3d(len(classes), tuple(stream_checkpoints))
    for stream, path in stream_checkpoints.items():
      checkpoints.restore(model.streams[stream], stream, path,
                          include_logits=True)
    return cls(model, classes, bfloat16)

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
    forward = self._forward.get_concrete_function(
        {s: tf.TensorSpec([None, None, *x.shape[2:]] if any_length else x.shape,
                          tf.float32) for s, x in inputs.items()})
    with precision.inference_precision(self.bfloat16):
      outputs = forward(inputs)
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


def classify_video(classifier: Classifier,
                   path: str,
                   preprocess: preprocess_lib.PreprocessConfig,
                   crop_size: int,
                   window: int = preprocess_lib.MAX_CLIP_FRAMES,
                   windows_per_batch: int = 1) -> Dict[str, np.ndarray]:
  """Classifies a video file: all its frames, centre-cropped.

  A video of up to `window` frames is one clip. A longer one is decoded once
  and streamed as consecutive clips of `window` frames (the last aligned to
  the end, see `preprocess_lib.clip_windows`) whose logits are averaged, as
  multi-clip testing does: memory holds one batch of clips whatever the
  video's length.

  Args:
    classifier: the model (`TrainedModel.classifier`, or a Kinetics one).
    path: the video file.
    preprocess: decoding settings; `max_frames` limits the part classified
      (DeepMind tests on up to 250 frames), None for the whole video.
    crop_size: side of the centre crop.
    window: frames per clip of a long video.
    windows_per_batch: clips per forward pass.

  Returns:
    {stream: [K] logits, ..., "joint": [K]}.

  Raises:
    VideoError: if the file cannot be decoded or is too short for flow.
    ValueError: if the crop is larger than the frames.
  """
  total, num_windows = None, 0
  for _, _, logits in classify_windows(
      classifier,
      iter_clip_windows(
          preprocess_lib.iter_model_frames(path, classifier.streams, preprocess,
                                         crop_size),
          window, window), windows_per_batch):
    num_windows += 1
    total = logits if total is None else {
        name: total[name] + value for name, value in logits.items()}
  return {name: value / num_windows for name, value in total.items()}


def iter_clip_windows(
    frames: Iterable[Mapping[str, np.ndarray]], window: int, stride: int
) -> Iterator[Tuple[int, int, Dict[str, np.ndarray]]]:
  """Cuts a stream of per-frame model inputs into clips covering all of them.

  The clips are `preprocess_lib.clip_windows(num_frames, window, stride)`, found
  without knowing the number of frames in advance: only the last `window`
  frames are held.

  Args:
    frames: {stream: [H, W, C]} per frame, at least one frame.
    window: frames per clip.
    stride: frames between clip starts, from 1 to `window`.

  Yields:
    (start, end, {stream: [end - start, H, W, C]}) in order of start.
  """
  buffer: Deque[Mapping[str, np.ndarray]] = collections.deque(maxlen=window)
  num_frames = last_end = 0

  def clip() -> Dict[str, np.ndarray]:
    return {s: np.stack([frame[s] for frame in buffer]) for s in buffer[0]}

  for num_frames, inputs in enumerate(frames, 1):
    buffer.append(inputs)
    start = num_frames - window
    if start >= 0 and start % stride == 0:
      last_end = num_frames
      yield start, num_frames, clip()
  if last_end < num_frames:
    # The whole of a video shorter than a clip, or a clip aligned to the end.
    yield num_frames - len(buffer), num_frames, clip()


def classify_windows(
    classifier: Classifier,
    clips: Iterable[Tuple[int, int, Mapping[str, np.ndarray]]],
    windows_per_batch: int = 1
) -> Iterator[Tuple[int, int, Dict[str, np.ndarray]]]:
  """Computes the logits of a stream of clips, several per forward pass.

  Args:
    classifier: the model.
    clips: (start, end, {stream: [T, H, W, C]}) as `iter_clip_windows`
      yields them.
    windows_per_batch: clips per forward pass (clips of one length).

  Yields:
    (start, end, {stream: [K] logits, ..., "joint": [K]}) per clip, in order.
  """
  if windows_per_batch < 1:
    raise ValueError(
        f"windows_per_batch must be at least 1, got {windows_per_batch}")
  batch: List[Tuple[int, int, Mapping[str, np.ndarray]]] = []

  def run() -> Iterator[Tuple[int, int, Dict[str, np.ndarray]]]:
    logits = classifier.logits(
        {s: np.stack([c[s] for _, _, c in batch]) for s in classifier.streams},
        any_length=True)
    for i, (start, end, _) in enumerate(batch):
      yield start, end, {name: value[i] for name, value in logits.items()}
    batch.clear()

  for start, end, clip in clips:
    if batch and end - start != batch[0][1] - batch[0][0]:
      yield from run()
    batch.append((start, end, clip))
    if len(batch) == windows_per_batch:
      yield from run()
  if batch:
    yield from run()


def format_prediction(path: str, top_k: Sequence[Mapping[str, Any]]) -> str:
  """A readable prediction: the video, then one line per class, best first.

  Args:
    path: the video.
    top_k: the "top_k" list of `prediction_json`.

  Returns:
    E.g. "squat.mp4\n  91.2%  squat_correct\n   5.1%  squat_not-low".
  """
  return "\n".join([path] + [f"  {100 * p['probability']:5.1f}%  {p['label']}"
                             for p in top_k])


def window_frames(fps: float, window_s: float,
                  stride_s: float) -> Tuple[int, int]:
  """Lengths in frames of the sliding windows and of their stride.

  Args:
    fps: the video's frame rate.
    window_s: window length in seconds.
    stride_s: seconds between window starts; at most `window_s`.

  Returns:
    `(window, stride)` in frames, each at least 1, as `sliding_windows` uses.

  Raises:
    ValueError: if an argument is not positive or the stride is longer than
      the window.
  """
  if not fps > 0 or not window_s > 0 or not stride_s > 0:
    raise ValueError(
        "fps, window_s and stride_s must be positive, got "
        f"fps={fps}, window_s={window_s}, stride_s={stride_s}")
  window = max(1, int(round(window_s * fps)))
  stride = max(1, int(round(stride_s * fps)))
  if stride > window:
    raise ValueError(
        f"stride ({stride_s} s) is longer than the window ({window_s} s), so "
        "frames between windows would never be classified")
  return window, stride


def sliding_windows(num_frames: int, fps: float, window_s: float,
                    stride_s: float) -> List[Tuple[int, int]]:
  """Frame ranges of sliding windows that cover a whole video.

  Windows start every `stride_s` seconds (see `preprocess_lib.clip_windows`).

  Args:
    num_frames: frames in the video.
    fps: the video's frame rate.
    window_s: window length in seconds.
    stride_s: seconds between window starts; at most `window_s`, so that no
      frame is skipped.

  Returns:
    `(start, end)` frame index ranges, `end` exclusive, in increasing order.

  Raises:
    ValueError: if an argument is not positive or the stride is longer than
      the window.
  """
  if num_frames < 1:
    raise ValueError(f"num_frames must be at least 1, got {num_frames}")
  return preprocess_lib.clip_windows(num_frames,
                                     *window_frames(fps, window_s, stride_s))


def timeline(windows: Sequence[Tuple[int, int]],
             window_probs: np.ndarray,
             classes: Sequence[str],
             fps: float) -> List[Dict[str, Any]]:
  """The top class of each window, with times in seconds.

  Args:
    windows: `(start, end)` frame ranges, as from `sliding_windows`.
    window_probs: `[W, K]` class probabilities of the windows (softmax of the
      logits, not the logits themselves).
    classes: the K class names.
    fps: the video's frame rate.

  Returns:
    One dict per window, in the order given:
    `{"start": float, "end": float, "label": str, "probability": float}`.

  Raises:
    ValueError: if there are no windows, the shapes disagree, `window_probs`
      are not probabilities, or `fps` is not positive.
  """
  classes = labels_lib.validate_classes(classes)
  if not windows:
    raise ValueError("there are no windows")
  window_probs = np.asarray(window_probs, dtype=np.float64)
  if window_probs.ndim != 2 or window_probs.shape != (len(windows),
                                                      len(classes)):
    raise ValueError(
        f"window_probs must have shape [{len(windows)} windows, "
        f"{len(classes)} classes], got shape {window_probs.shape}")
  if not fps > 0:
    raise ValueError(f"fps must be positive, got {fps}")
  if (not np.all((window_probs >= 0) & (window_probs <= 1)) or
      not np.allclose(window_probs.sum(axis=1), 1.0, atol=1e-3)):
    raise ValueError(
        "window_probs must be probabilities in [0, 1] summing to 1 per window; "
        "apply softmax to logits first")
  entries = []
  for (start, end), probabilities in zip(windows, window_probs):
    best = int(np.argmax(probabilities))
    entries.append({
        "start": start / fps,
        "end": end / fps,
        "label": classes[best],
        "probability": float(probabilities[best]),
    })
  return entries


def classify_timeline(classifier: Classifier,
                      path: str,
                      preprocess: preprocess_lib.PreprocessConfig,
                      crop_size: int,
                      window_s: float = 2.0,
                      stride_s: float = 1.0) -> List[Dict[str, Any]]:
  """Classifies a long video in sliding windows (see `timeline`).

  The video is decoded once and streamed: memory holds one window of
  centre-cropped frames, whatever the video's length. Windows follow
  `sliding_windows` at the preprocessing frame rate, so they cover
  every frame.

  Args:
    classifier: the model.
    path: the video file.
    preprocess: decoding settings; `max_frames` (None for all) limits the
      part of the video classified.
    crop_size: side of the centre crop.
    window_s: window length in seconds.
    stride_s: seconds between window starts; at most `window_s`.

  Returns:
    One entry per window, in time order: {"start": s, "end": s, "label":
    class, "probability": p} (times in seconds from the start of the video).

  Raises:
    VideoError: if the file cannot be decoded or is too short for flow.
    ValueError: for bad window settings or a crop larger than the frames.
  """
  fps = preprocess.fps
  window, stride = window_frames(fps, window_s, stride_s)
  window_logits = {
      (start, end): logits[streams_lib.JOINT]
      for start, end, logits in classify_windows(
          classifier,
          iter_clip_windows(
              preprocess_lib.iter_model_frames(path, classifier.streams,
                                               preprocess, crop_size),
              window, stride))}
  num_frames = max(end for _, end in window_logits)
  windows = sliding_windows(num_frames, fps, window_s, stride_s)
  assert list(window_logits) == windows, (list(window_logits), windows)
  probabilities = metrics.softmax(np.stack([window_logits[w]
                                            for w in windows]))
  logging.info("%s: %d frames at %g fps, %d windows", path, num_frames, fps,
               len(windows))
  return timeline(windows, probabilities, classifier.classes, fps)
