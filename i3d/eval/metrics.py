"""Evaluation metrics, reports, pictures and timelines for video classifiers.

Everything here is model-agnostic: it takes logits or probabilities as numpy
arrays and returns plain Python values or writes files, so the same functions
serve the RGB, flow and joint (two-stream) I3D models, or any other classifier.

Conventions:
  * Logits are `[num_videos, num_classes]`; labels are class indices.
  * Two-stream fusion follows DeepMind's I3D: the stream logits are summed and
    the softmax is taken of the sum.
  * Multi-view testing averages the logits of the views (clips x crops).
  * Metrics for a class without support are defined without NaN: see
    `compute_metrics`.
"""

import csv
import io
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import cv2
import numpy as np

from i3d import fileio
from i3d import labels as labels_lib

JOINT_STREAM = "joint"

# Light-to-dark blue in BGR (matplotlib's "Blues" end points), for cell shading.
_LIGHT_CELL_BGR = np.array([255, 251, 247], dtype=np.float64)
_DARK_CELL_BGR = np.array([107, 48, 8], dtype=np.float64)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
# Codec for annotated videos: mp4v ships with every OpenCV FFmpeg build.
_VIDEO_FOURCC = "mp4v"


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
  """Numerically stable softmax.

  Args:
    logits: an array of logits.
    axis: the class axis.

  Returns:
    Probabilities of the same shape as `logits`, summing to 1 along `axis`.
  """
  logits = np.asarray(logits, dtype=np.float64)
  # Subtracting the maximum keeps exp() from overflowing; softmax is unchanged.
  shifted = logits - np.max(logits, axis=axis, keepdims=True)
  exp = np.exp(shifted)
  return exp / np.sum(exp, axis=axis, keepdims=True)


def _validate_logits(logits: np.ndarray,
                     classes: Sequence[str]) -> np.ndarray:
  """Checks that `logits` is a finite, non-empty [N, len(classes)] array."""
  logits = np.asarray(logits, dtype=np.float64)
  if logits.ndim != 2:
    raise ValueError(
        "logits must have shape [num_videos, num_classes], got shape "
        f"{logits.shape}")
  if logits.shape[0] == 0:
    raise ValueError("logits are empty: there are no videos to evaluate")
  if logits.shape[1] != len(classes):
    raise ValueError(
        f"logits have {logits.shape[1]} classes but the class list has "
        f"{len(classes)}; the class list does not match the model")
  if not np.all(np.isfinite(logits)):
    raise ValueError("logits contain NaN or infinite values")
  return logits


def _validate_label_indices(label_indices: np.ndarray, num_videos: int,
                            num_classes: int) -> np.ndarray:
  """Checks that `label_indices` holds num_videos indices below num_classes."""
  label_indices = np.asarray(label_indices)
  if label_indices.ndim != 1 or label_indices.shape[0] != num_videos:
    raise ValueError(
        f"labels must have shape [{num_videos}] to match the logits, got shape "
        f"{label_indices.shape}")
  if label_indices.dtype.kind not in "iu":
    raise ValueError("labels must be integer class indices, got dtype "
                     f"{label_indices.dtype}")
  out_of_range = label_indices[(label_indices < 0) |
                               (label_indices >= num_classes)]
  if out_of_range.size:
    raise ValueError(
        f"labels {sorted(set(out_of_range.tolist()))} are out of range for "
        f"{num_classes} classes")
  return label_indices.astype(np.int64)


def _validate_confusion_matrix(matrix: np.ndarray,
                               classes: Sequence[str]) -> np.ndarray:
  """Checks that `matrix` is a [K, K] array of counts for K classes."""
  matrix = np.asarray(matrix)
  num_classes = len(classes)
  if matrix.shape != (num_classes, num_classes):
    raise ValueError(
        f"confusion matrix must have shape [{num_classes}, {num_classes}] for "
        f"{num_classes} classes, got shape {matrix.shape}")
  if not np.all(np.isfinite(matrix)) or np.any(matrix < 0) or np.any(
      matrix != np.round(matrix)):
    raise ValueError("confusion matrix entries must be non-negative counts")
  return matrix.astype(np.int64)


def _top_k_indices(logits: np.ndarray, k: int) -> np.ndarray:
  """Indices of the k largest logits per row, best first.

  A stable sort breaks ties towards the lower class index, as `np.argmax` does,
  so the top-1 prediction is always the first of the top k.
  """
  return np.argsort(-logits, axis=1, kind="stable")[:, :k]


def compute_metrics(logits: np.ndarray,
                    labels: np.ndarray,
                    classes: Sequence[str],
                    top_k: int = 5) -> Dict[str, Any]:
  """Classification metrics for one set of predictions.

  Convention for classes without support (no video of that class) or without
  predictions: precision, recall and F1 are 0.0 where their denominator is
  zero (scikit-learn's `zero_division=0`), and the mean class accuracy averages
  the recall over the classes that have support only, so that classes absent
  from the evaluation set neither count as failures nor produce NaN.

  Args:
    logits: `[N, K]` logits (or any scores whose argmax is the prediction).
    labels: `[N]` integer true class indices in `[0, K)`.
    classes: the K class names, in logit order.
    top_k: k of the top-k accuracy; clipped to K.

  Returns:
    A JSON-serialisable dict:
    `{"top1": float, "top_k": {"k": int, "accuracy": float},
      "mean_class_accuracy": float,
      "per_class": {name: {"precision": float, "recall": float, "f1": float,
                           "support": int}},
      "confusion_matrix": [[int]] (rows true class, columns predicted class),
      "classes": [str], "num_videos": int}`.

  Raises:
    ValueError: if the class list is empty or has duplicates, the logits are
      not `[N, K]` with N > 0 and K classes, contain NaN or infinity, the
      labels do not match them or are out of range, or `top_k` < 1.
  """
  classes = labels_lib.validate_classes(classes)
  logits = _validate_logits(logits, classes)
  num_videos, num_classes = logits.shape
  label_indices = _validate_label_indices(labels, num_videos, num_classes)
  if top_k < 1:
    raise ValueError(f"top_k must be at least 1, got {top_k}")
  k = min(int(top_k), num_classes)

  top_indices = _top_k_indices(logits, k)
  predictions = top_indices[:, 0]
  in_top_k = np.any(top_indices == label_indices[:, None], axis=1)

  confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
  np.add.at(confusion, (label_indices, predictions), 1)
  true_positives = np.diag(confusion)
  support = confusion.sum(axis=1)
  predicted = confusion.sum(axis=0)

  per_class = {}
  for index, name in enumerate(classes):
    precision = (true_positives[index] / predicted[index]
                 if predicted[index] else 0.0)
    recall = true_positives[index] / support[index] if support[index] else 0.0
    f1 = (2 * precision * recall / (precision + recall)
          if precision + recall else 0.0)
    per_class[name] = {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "support": int(support[index]),
    }

  has_support = support > 0
  class_recalls = true_positives[has_support] / support[has_support]
  return {
      "top1": float(np.mean(predictions == label_indices)),
      "top_k": {"k": k, "accuracy": float(np.mean(in_top_k))},
      "mean_class_accuracy": float(np.mean(class_recalls)),
      "per_class": per_class,
      "confusion_matrix": confusion.tolist(),
      "classes": list(classes),
      "num_videos": int(num_videos),
  }


def fuse_streams(stream_logits: Mapping[str, np.ndarray]) -> np.ndarray:
  """Two-stream fusion as in DeepMind's I3D: the sum of the stream logits.

  The joint probabilities are `softmax(fuse_streams(...))`.

  Args:
    stream_logits: stream name (e.g. "rgb", "flow") to `[N, K]` logits.

  Returns:
    The `[N, K]` joint logits.

  Raises:
    ValueError: if no stream is given or the streams' shapes differ.
  """
  if not stream_logits:
    raise ValueError("no stream logits given")
  shapes = {name: np.shape(logits) for name, logits in stream_logits.items()}
  if len(set(shapes.values())) != 1:
    raise ValueError(f"stream logits have different shapes: {shapes}")
  return np.sum([np.asarray(logits, dtype=np.float64)
                 for logits in stream_logits.values()], axis=0)


def evaluate_streams(stream_logits: Mapping[str, np.ndarray],
                     labels: np.ndarray,
                     classes: Sequence[str],
                     top_k: int = 5) -> Dict[str, Any]:
  """Metrics for each stream and, with several streams, for their fusion.

  Args:
    stream_logits: stream name (e.g. "rgb", "flow") to `[N, K]` logits.
      "joint" is reserved for the fusion.
    labels: `[N]` integer true class indices.
    classes: the K class names, in logit order.
    top_k: k of the top-k accuracy; clipped to K.

  Returns:
    The `compute_metrics` dict of the joint model (of the only stream, when
    one is given), plus `"streams": {name: metrics}` holding each given stream
    and, with several streams, "joint" last.

  Raises:
    ValueError: if no stream is given, a stream is called "joint", the
      streams' shapes differ, or `compute_metrics` rejects its inputs.
  """
  if JOINT_STREAM in stream_logits:
    raise ValueError(
        f"stream name {JOINT_STREAM!r} is reserved for the fused streams")
  joint_logits = fuse_streams(stream_logits)
  streams = {
      name: compute_metrics(logits, labels, classes, top_k)
      for name, logits in stream_logits.items()
  }
  if len(stream_logits) > 1:
    streams[JOINT_STREAM] = compute_metrics(joint_logits, labels, classes,
                                            top_k)
  headline = streams.get(JOINT_STREAM) or next(iter(streams.values()))
  return {**headline, "streams": streams}


def average_views(view_logits: np.ndarray) -> np.ndarray:
  """Multi-view testing: averages logits over views (clips x crops).

  Args:
    view_logits: `[V, K]` logits of one video's V views, or `[N, V, K]` for N
      videos.

  Returns:
    `[K]` or `[N, K]` logits averaged over the views.

  Raises:
    ValueError: if the array is not 2-D or 3-D, or has no views.
  """
  view_logits = np.asarray(view_logits, dtype=np.float64)
  if view_logits.ndim not in (2, 3):
    raise ValueError(
        "view logits must have shape [views, classes] or [videos, views, "
        f"classes], got shape {view_logits.shape}")
  if view_logits.shape[-2] == 0:
    raise ValueError("view logits have no views to average")
  return np.mean(view_logits, axis=-2)


def _format_single_report(metrics: Mapping[str, Any]) -> List[str]:
  """Report lines for one `compute_metrics` dict."""
  classes = metrics["classes"]
  name_width = max(len("Class"), *(len(name) for name in classes))
  top_k = metrics["top_k"]
  summary = [
      ("Videos", str(metrics["num_videos"])),
      ("Top-1 accuracy", f"{100 * metrics['top1']:.2f}%"),
      (f"Top-{top_k['k']} accuracy", f"{100 * top_k['accuracy']:.2f}%"),
      ("Mean class accuracy", f"{100 * metrics['mean_class_accuracy']:.2f}%"),
  ]
  lines = [f"{label + ':':<21}{value:>8}" for label, value in summary]
  lines += [
      "",
      f"{'Class':<{name_width}}  Precision  Recall      F1  Support",
  ]
  for name in classes:
    scores = metrics["per_class"][name]
    lines.append(
        f"{name:<{name_width}}  {scores['precision']:9.3f}  "
        f"{scores['recall']:6.3f}  {scores['f1']:6.3f}  {scores['support']:7d}")

  # Columns are numbered rather than named: full names would make the table
  # too wide to read; the row labels give the number of each name.
  matrix = metrics["confusion_matrix"]
  index_width = len(str(len(classes) - 1))
  cell_width = max(index_width,
                   *(len(str(count)) for row in matrix for count in row)) + 1
  row_label_width = index_width + 1 + name_width
  lines += [
      "",
      "Confusion matrix (rows: true class, columns: predicted class)",
      " " * row_label_width + "".join(
          f"{index:>{cell_width}}" for index in range(len(classes))),
  ]
  for index, (name, row) in enumerate(zip(classes, matrix)):
    lines.append(f"{index:>{index_width}} {name:<{name_width}}" +
                 "".join(f"{count:>{cell_width}}" for count in row))
  return lines


def format_report(metrics: Mapping[str, Any]) -> str:
  """A readable text report of `compute_metrics` or `evaluate_streams` output.

  Args:
    metrics: a `compute_metrics` dict, or an `evaluate_streams` dict, whose
      streams are reported one after another under their names.

  Returns:
    The report: top-1, top-k and mean class accuracy, per-class precision,
    recall, F1 and support, and the confusion matrix with class names.
  """
  if "streams" not in metrics:
    return "\n".join(_format_single_report(metrics)) + "\n"
  sections = []
  for name, stream_metrics in metrics["streams"].items():
    sections.append("\n".join([f"=== {name} ===",
                               *_format_single_report(stream_metrics)]))
  return "\n\n".join(sections) + "\n"


def _text_scale_to_fit(text: str, max_width: float, max_height: float,
                       thickness: int) -> float:
  """The largest font scale at which `text` fits the given box."""
  (width, height), baseline = cv2.getTextSize(text, _FONT, 1.0, thickness)
  return min(max_width / max(width, 1), max_height / (height + baseline))


def _put_text(image: np.ndarray, text: str, origin: Tuple[float, float],
              scale: float, color: Tuple[int, int, int],
              thickness: int = 1) -> None:
  """Draws anti-aliased text with its baseline-left corner at `origin`."""
  cv2.putText(image, text, (int(round(origin[0])), int(round(origin[1]))),
              _FONT, scale, color, thickness, cv2.LINE_AA)


def render_confusion_matrix(matrix: np.ndarray,
                            classes: Sequence[str],
                            title: str = "Confusion matrix") -> np.ndarray:
  """Draws a confusion matrix as a BGR image.

  Cells are shaded by the row-normalised value (the fraction of each true
  class predicted as each class; rows without support stay white) and show the
  counts; class names label both axes.

  Args:
    matrix: `[K, K]` counts, rows true class, columns predicted class.
    classes: the K class names.
    title: drawn above the matrix. OpenCV's fonts draw ASCII only.

  Returns:
    A `[H, W, 3]` uint8 BGR image.

  Raises:
    ValueError: if `matrix` is not `[K, K]` non-negative counts for the classes.
  """
  classes = labels_lib.validate_classes(classes)
  counts = _validate_confusion_matrix(matrix, classes)
  num_classes = len(classes)
  row_totals = counts.sum(axis=1, keepdims=True)
  fractions = counts / np.maximum(row_totals, 1)

  # Cells shrink as classes grow so that a Kinetics-400 matrix stays a few
  # thousand pixels wide; counts are drawn only where they stay legible.
  cell = int(np.clip(720 // num_classes, 6, 64))
  name_scale = min(0.5, 0.8 * cell / 22)
  name_width = max(
      cv2.getTextSize(name, _FONT, name_scale, 1)[0][0] for name in classes)
  pad = 10
  axis_title_height = 30
  grid_size = cell * num_classes
  left = axis_title_height + name_width + pad
  top = 50
  width = left + grid_size + pad
  height = top + grid_size + pad + name_width + axis_title_height
  image = np.full((height, max(width, 320), 3), 255, dtype=np.uint8)

  count_text_height = 0.35 * cell
  for row in range(num_classes):
    for col in range(num_classes):
      fraction = fractions[row, col]
      color = (1 - fraction) * _LIGHT_CELL_BGR + fraction * _DARK_CELL_BGR
      x0, y0 = left + col * cell, top + row * cell
      cv2.rectangle(image, (x0, y0), (x0 + cell - 1, y0 + cell - 1),
                    tuple(int(c) for c in color), cv2.FILLED)
      if cell >= 14:
        text = str(counts[row, col])
        scale = _text_scale_to_fit(text, 0.8 * cell, count_text_height, 1)
        (text_w, text_h), _ = cv2.getTextSize(text, _FONT, scale, 1)
        text_color = (255, 255, 255) if fraction > 0.5 else (0, 0, 0)
        _put_text(image, text, (x0 + (cell - text_w) / 2,
                                y0 + (cell + text_h) / 2), scale, text_color)
  cv2.rectangle(image, (left - 1, top - 1), (left + grid_size, top + grid_size),
                (128, 128, 128), 1)

  # True-class names: right-aligned beside the rows.
  for row, name in enumerate(classes):
    (text_w, text_h), _ = cv2.getTextSize(name, _FONT, name_scale, 1)
    _put_text(image, name, (left - pad / 2 - text_w,
                            top + row * cell + (cell + text_h) / 2),
              name_scale, (0, 0, 0))
  # Predicted-class names: drawn right-aligned in a strip that is rotated a
  # quarter turn, so they read upwards and end next to their column.
  strip = np.full((grid_size, name_width + pad, 3), 255, dtype=np.uint8)
  for col, name in enumerate(classes):
    (text_w, text_h), _ = cv2.getTextSize(name, _FONT, name_scale, 1)
    _put_text(strip, name, (name_width + pad / 2 - text_w,
                            col * cell + (cell + text_h) / 2),
              name_scale, (0, 0, 0))
  rotated = cv2.rotate(strip, cv2.ROTATE_90_COUNTERCLOCKWISE)
  strip_top = top + grid_size
  image[strip_top:strip_top + rotated.shape[0],
        left:left + grid_size] = rotated

  axis_scale = 0.55
  (predicted_w, _), _ = cv2.getTextSize("Predicted class", _FONT, axis_scale, 1)
  _put_text(image, "Predicted class",
            (left + (grid_size - predicted_w) / 2, height - 10), axis_scale,
            (0, 0, 0))
  (true_w, true_h), _ = cv2.getTextSize("True class", _FONT, axis_scale, 1)
  true_label = np.full((true_h + 8, true_w + 4, 3), 255, dtype=np.uint8)
  _put_text(true_label, "True class", (2, true_h + 2), axis_scale, (0, 0, 0))
  true_label = cv2.rotate(true_label, cv2.ROTATE_90_COUNTERCLOCKWISE)
  label_top = max(0, top + (grid_size - true_label.shape[0]) // 2)
  label_rows = min(true_label.shape[0], height - label_top)
  image[label_top:label_top + label_rows, 4:4 + true_label.shape[1]] = (
      true_label[:label_rows])

  title_scale = _text_scale_to_fit(title, image.shape[1] - 2 * pad, 24, 1)
  _put_text(image, title, (pad, 32), title_scale, (0, 0, 0), 1)
  return image


def write_confusion_matrix_png(matrix: np.ndarray,
                               classes: Sequence[str],
                               path: str,
                               title: str = "Confusion matrix") -> None:
  """Writes the `render_confusion_matrix` picture to a PNG file atomically.

  Args:
    matrix: `[K, K]` counts, rows true class, columns predicted class.
    classes: the K class names.
    path: the PNG file to write.
    title: drawn above the matrix.

  Raises:
    ValueError: if `matrix` does not fit the classes.
    OSError: if the image cannot be encoded.
  """
  image = render_confusion_matrix(matrix, classes, title)
  encoded, png = cv2.imencode(".png", image)
  if not encoded:
    raise OSError(f"{path}: OpenCV could not encode the confusion matrix PNG")
  fileio.write_bytes(path, png.tobytes())
  logging.info("Wrote confusion matrix to %s", path)


def write_predictions_csv(path: str,
                          paths: Sequence[str],
                          labels: Optional[Sequence[str]],
                          logits: np.ndarray,
                          classes: Sequence[str]) -> None:
  """Writes one CSV row per video: path, label, prediction, probabilities.

  The columns are `path`, `label` (empty when unknown), `prediction`, and
  `prob_<class>` for each class: the softmax of the logits.

  Args:
    path: the CSV file to write.
    paths: the N video paths.
    labels: the N true class names, or None for unlabelled videos.
    logits: `[N, K]` logits.
    classes: the K class names, in logit order.

  Raises:
    ValueError: if the lengths or shapes disagree, or a label is not a class.
  """
  classes = labels_lib.validate_classes(classes)
  logits = _validate_logits(logits, classes)
  if len(paths) != logits.shape[0]:
    raise ValueError(
        f"{len(paths)} video paths but logits for {logits.shape[0]} videos")
  if labels is None:
    labels = [""] * len(paths)
  elif len(labels) != len(paths):
    raise ValueError(f"{len(labels)} labels but {len(paths)} video paths")
  else:
    unknown = sorted(set(labels) - set(classes))
    if unknown:
      raise ValueError(f"labels {unknown} are not in the class list")

  probabilities = softmax(logits)
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(["path", "label", "prediction",
                   *(f"prob_{name}" for name in classes)])
  for video_path, label, video_probabilities in zip(paths, labels,
                                                    probabilities):
    writer.writerow([
        video_path, label, classes[int(np.argmax(video_probabilities))],
        *(f"{p:.6f}" for p in video_probabilities)
    ])
  fileio.write_text(path, buffer.getvalue())
  logging.info("Wrote predictions for %d videos to %s", len(paths), path)


def write_metrics_json(path: str, metrics: Mapping[str, Any]) -> None:
  """Writes a `compute_metrics` or `evaluate_streams` dict as JSON atomically.

  Args:
    path: the JSON file to write.
    metrics: the metrics.
  """
  fileio.write_json(path, dict(metrics))
  logging.info("Wrote metrics to %s", path)


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

  Windows start every `stride_s` seconds; when the last regular window stops
  short of the end, one more window is aligned to the end, so every frame is
  in some window and all windows have the same length. A video no longer than
  a window gives one window over all its frames.

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
  window, stride = window_frames(fps, window_s, stride_s)
  if num_frames <= window:
    return [(0, num_frames)]
  windows = [(start, start + window)
             for start in range(0, num_frames - window + 1, stride)]
  if windows[-1][1] < num_frames:
    windows.append((num_frames - window, num_frames))
  return windows


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


class _TimelineLookup:
  """Finds the timeline entry that describes each moment of a video.

  Windows overlap, so a moment lies in several; the one whose centre is nearest
  describes it best, as the moment is then furthest from the window's edges.
  """

  def __init__(self, entries: Sequence[Mapping[str, Any]]):
    if not entries:
      raise ValueError("the timeline is empty")
    for index, entry in enumerate(entries):
      missing = {"start", "end", "label", "probability"} - set(entry)
      if missing:
        raise ValueError(f"timeline entry {index} lacks {sorted(missing)}")
    self._entries = sorted(entries, key=lambda e: (e["start"] + e["end"]) / 2)
    self._centres = np.array(
        [(e["start"] + e["end"]) / 2 for e in self._entries])

  def at(self, seconds: float) -> Optional[Mapping[str, Any]]:
    """The entry covering `seconds` with the nearest centre, or None."""
    nearest = int(np.searchsorted(self._centres, seconds))
    candidates = [self._entries[i] for i in (nearest - 1, nearest)
                  if 0 <= i < len(self._entries)]
    covering = [e for e in candidates if e["start"] <= seconds < e["end"]]
    if not covering:
      return None
    return min(covering,
               key=lambda e: abs((e["start"] + e["end"]) / 2 - seconds))


def _draw_label(frame_bgr: np.ndarray, entry: Mapping[str, Any]) -> None:
  """Draws `entry`'s label and confidence in a dark banner across the top."""
  height, width = frame_bgr.shape[:2]
  text = f"{entry['label']}  {100 * entry['probability']:.0f}%"
  thickness = max(1, height // 240)
  banner_height = max(16, height // 10)
  scale = _text_scale_to_fit(text, 0.95 * width, 0.7 * banner_height,
                             thickness)
  banner = frame_bgr[:banner_height]
  # Darkening rather than painting over keeps the scene visible beneath.
  banner[:] = (banner * 0.35).astype(np.uint8)
  (_, text_h), _ = cv2.getTextSize(text, _FONT, scale, thickness)
  _put_text(frame_bgr, text, (0.02 * width, (banner_height + text_h) / 2),
            scale, (255, 255, 255), thickness)


def _read_video_frames(path: str) -> Tuple[Iterator[np.ndarray], float]:
  """Opens a video file; returns a BGR frame iterator and the file's fps."""
  if not os.path.isfile(path):
    raise ValueError(f"{path}: video file not found")
  capture = cv2.VideoCapture(path)
  if not capture.isOpened():
    raise ValueError(f"{path}: OpenCV cannot open the video")
  file_fps = capture.get(cv2.CAP_PROP_FPS)

  def frames() -> Iterator[np.ndarray]:
    try:
      while True:
        ok, frame = capture.read()
        if not ok:
          return
        yield frame
    finally:
      capture.release()

  return frames(), file_fps


def _encode_annotated(frames_bgr: Iterator[np.ndarray], lookup: _TimelineLookup,
                      path: str, fps: float) -> int:
  """Encodes BGR frames with their timeline labels drawn; returns the count."""
  writer = None
  num_written = 0
  try:
    for index, frame in enumerate(frames_bgr):
      if writer is None:
        height, width = frame.shape[:2]
        writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*_VIDEO_FOURCC),
                                 float(fps), (width, height))
        if not writer.isOpened():
          raise OSError(
              f"OpenCV cannot write {os.path.splitext(path)[1]} video with "
              f"the {_VIDEO_FOURCC} codec")
      frame = np.ascontiguousarray(frame)
      # A frame's centre time lies inside exactly the windows holding it.
      entry = lookup.at((index + 0.5) / fps)
      if entry is not None:
        _draw_label(frame, entry)
      writer.write(frame)
      num_written += 1
  finally:
    if writer is not None:
      writer.release()
  if not num_written:
    raise ValueError("the video has no frames to annotate")
  return num_written


def write_annotated_video(video: np.ndarray | str,
                          entries: Sequence[Mapping[str, Any]],
                          out_path: str,
                          fps: Optional[float] = None) -> int:
  """Writes a copy of a video with the current label drawn on every frame.

  Each frame shows the label and confidence of the timeline entry covering it
  whose centre is nearest (see `timeline`); frames no entry covers are copied
  unchanged. The file is encoded with mp4v and written atomically.

  Args:
    video: `[T, H, W, 3]` uint8 RGB frames, or the path of a video file
      (streamed frame by frame, so long videos need not fit in memory).
    entries: timeline entries `{"start", "end", "label", "probability"}`,
      times in seconds.
    out_path: the video file to write, e.g. `annotated.mp4`; its extension
      chooses the container.
    fps: frame rate of the frames, and of the output; for a video file, None
      takes the file's own rate.

  Returns:
    The number of frames written.

  Raises:
    ValueError: if the frames are not uint8 RGB, the video file cannot be
      opened or has no frames, the frame rate is unknown, the timeline is
      empty or an entry lacks a key, or `out_path` has no extension.
    OSError: if OpenCV cannot open a video writer.
  """
  extension = os.path.splitext(out_path)[1]
  if not extension:
    raise ValueError(
        f"{out_path}: the output path needs an extension such as .mp4")
  lookup = _TimelineLookup(entries)
  if isinstance(video, str):
    frames_bgr, file_fps = _read_video_frames(video)
    fps = fps or file_fps
  else:
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
      raise ValueError(
          "frames must be a [T, H, W, 3] uint8 RGB array, got shape "
          f"{video.shape} and dtype {video.dtype}")
    frames_bgr = (cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) for frame in video)
  if not fps or not fps > 0:
    raise ValueError(f"the frame rate must be positive, got {fps}")

  with fileio.atomic_path(out_path) as tmp:
    # OpenCV picks the container from the file name, which the temporary
    # file's ".tmp" suffix hides, so the encoder gets the real extension.
    encoder_path = tmp + extension
    try:
      num_written = _encode_annotated(frames_bgr, lookup, encoder_path, fps)
      os.replace(encoder_path, tmp)
    finally:
      if os.path.exists(encoder_path):
        os.remove(encoder_path)
  logging.info("Wrote annotated video (%d frames) to %s", num_written,
               out_path)
  return num_written
