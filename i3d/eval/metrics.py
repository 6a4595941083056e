"""Evaluation metrics of video classifiers: accuracy, per class, fusion, views.

Everything here is model-agnostic: it takes logits or probabilities as numpy
arrays and returns plain Python values, so the same functions
serve the RGB, flow and joint (two-stream) I3D models, or any other classifier.

Conventions:
  * Logits are `[num_videos, num_classes]`; labels are class indices.
  * Two-stream fusion follows DeepMind's I3D: the stream logits are summed and
    the softmax is taken of the sum.
  * Multi-view testing averages the logits of the views (clips x crops).
  * Metrics for a class without support are defined without NaN: see
    `compute_metrics`.
"""

from typing import Any, Dict, Mapping, Sequence

import numpy as np

from i3d import labels as labels_lib
from i3d import streams as streams_lib

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


def validate_logits(logits: np.ndarray,
                     classes: Sequence[str]) -> np.ndarray:
  """Checks that `logits` is a finite, non-empty [N, len(classes)] array.

  Returns:
    The logits as float64.

  Raises:
    ValueError: naming the problem.
  """
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
  logits = validate_logits(logits, classes)
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
  if streams_lib.JOINT in stream_logits:
    raise ValueError(
        f"stream name {streams_lib.JOINT!r} is reserved for the fused streams")
  joint_logits = fuse_streams(stream_logits)
  streams = {
      name: compute_metrics(logits, labels, classes, top_k)
      for name, logits in stream_logits.items()
  }
  if len(stream_logits) > 1:
    streams[streams_lib.JOINT] = compute_metrics(joint_logits, labels, classes,
                                            top_k)
  headline = streams.get(streams_lib.JOINT) or next(iter(streams.values()))
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
