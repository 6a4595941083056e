"""Reports of an evaluation and of a timeline: text, JSON, CSV and pictures.

The text report and the confusion-matrix picture of `i3d.eval.metrics`'
dicts, the per-video predictions CSV, and a copy of a video with the label of
each moment drawn on it (a timeline of `i3d.eval.classify`).
"""

import csv
import io as io_lib
import os
from typing import Any, Iterator, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import cv2
import numpy as np

from i3d import fileio
from i3d import labels as labels_lib
from i3d.eval import metrics
from i3d.video import io

# Light-to-dark blue in BGR (matplotlib's "Blues" end points), for cell shading.
_LIGHT_CELL_BGR = np.array([255, 251, 247], dtype=np.float64)
_DARK_CELL_BGR = np.array([107, 48, 8], dtype=np.float64)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
# Codec for annotated videos: mp4v ships with every OpenCV FFmpeg build.
_VIDEO_FOURCC = "mp4v"


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
  logits = metrics.validate_logits(logits, classes)
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

  probabilities = metrics.softmax(logits)
  buffer = io_lib.StringIO()
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
  whose centre is nearest (see `i3d.eval.classify.timeline`); frames no
  entry covers are copied
  unchanged. The file is encoded with mp4v and written atomically.

  Args:
    video: `[T, H, W, 3]` uint8 RGB frames, or the path of a video file
      (streamed frame by frame, so long videos need not fit in memory).
    entries: timeline entries `{"start", "end", "label", "probability"}`,
      times in seconds.
    out_path: the video file to write, e.g. `annotated.mp4`; its extension
      chooses the container.
    fps: frame rate of the frames, and of the output; for a video file, None
      takes the file's own rate when it declares a plausible one, else 25
      (frames placed by their timestamps, see `io.read_bgr_frames`).

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
    frames_bgr, fps = io.read_bgr_frames(video, fps)
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
