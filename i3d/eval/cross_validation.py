"""Cross-validation reports: pooled, per-fold and per-subject accuracy.

Numpy and OpenCV only; every number comes from `i3d.eval.metrics`
(`evaluate_streams` over the held-out predictions).

A cross-validation run's `train_dir` holds:
  cross_validation.json    `build_report`'s dict (see its docstring)
  cross_validation.txt     `format_report`'s text
  per_subject_accuracy.png one bar per subject, worst first
  learning_curve.json      `learning_curve`'s dict, when asked for
  learning_curve.png       held-out top-1 against training subjects

The 95% interval of the pooled top-1 is a percentile bootstrap over the
folds' groups (subjects; videos for folds over videos): videos of one person
succeed or fail together, so resampling videos as if independent (or a
Wilson interval over videos) would make the interval too narrow by about the
square root of the videos per subject. With few subjects (under ~10) the
bootstrap interval is itself too narrow, and it is [1, 1] when every subject
is classified perfectly: read it as a lower bound on the uncertainty.
"""

import dataclasses
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import numpy as np

from i3d import fileio
from i3d.data import splits
from i3d.eval import metrics as metrics_lib
from i3d.eval import reports

REPORT_JSON = "cross_validation.json"
REPORT_TEXT = "cross_validation.txt"
PER_SUBJECT_PNG = "per_subject_accuracy.png"
LEARNING_CURVE_JSON = "learning_curve.json"
LEARNING_CURVE_PNG = "learning_curve.png"
# How the 95% interval is made; {unit}: "subjects" or "videos".
INTERVAL_METHOD = "percentile bootstrap over {unit}, 10000 resamples"
OPTIMISTIC_WARNING = (
    "OPTIMISTIC: folds over videos, not subjects; people in the eval folds "
    "were also seen in training, so these numbers overstate accuracy on new "
    "people")
BOOTSTRAP_RESAMPLES = 10000

_FONT = cv2.FONT_HERSHEY_SIMPLEX
# BGR colours.
_BLACK = (0, 0, 0)
_GREY = (160, 160, 160)
_LIGHT_GREY = (225, 225, 225)
_BLUE = (180, 119, 31)
_ORANGE = (14, 127, 255)
_RED = (40, 39, 214)
_BAND = (235, 215, 200)


@dataclasses.dataclass(frozen=True)
class FoldResult:
  """A trained fold's held-out predictions and its training accuracy.

  Attributes:
    fold: the fold.
    paths: the N eval videos (the fold's eval paths, any order).
    labels: int [N] true class indices.
    logits: {stream: float [N, K]} held-out logits of each stream (no
      "joint": it is their sum, `i3d.eval.metrics.fuse_streams`).
    train_metrics: the `i3d.eval.metrics.evaluate_streams` dict of the
      fold's model on its own training videos, for the overfitting gap.
  """
  fold: splits.Fold
  paths: Tuple[str, ...]
  labels: np.ndarray
  logits: Mapping[str, np.ndarray]
  train_metrics: Mapping[str, Any]


def bootstrap_interval(correct: np.ndarray, videos: np.ndarray,
                       seed: int = 0, confidence: float = 0.95,
                       resamples: int = BOOTSTRAP_RESAMPLES
                       ) -> Tuple[float, float]:
  """Percentile-bootstrap interval of pooled accuracy, resampling groups.

  Each resample draws as many groups as there are, with replacement, and
  pools their videos: top-1 = sum(correct) / sum(videos) over the draw.

  Args:
    correct: [G] videos classified right per group (subject).
    videos: [G] videos per group, all > 0.
    seed: the random seed.
    confidence: the interval's coverage, in (0, 1).
    resamples: bootstrap resamples.

  Returns:
    (low, high) in [0, 1].

  Raises:
    ValueError: for no groups, a group without videos, or more right than
      videos.
  """
  correct = np.asarray(correct, dtype=np.float64)
  videos = np.asarray(videos, dtype=np.float64)
  if correct.ndim != 1 or correct.shape != videos.shape or not correct.size:
    raise ValueError("correct and videos must be equal-length, non-empty "
                     "[groups] arrays")
  if np.any(videos < 1) or np.any(correct < 0) or np.any(correct > videos):
    raise ValueError("every group needs videos, and 0 <= correct <= videos")
  rng = np.random.default_rng(seed)
  counts = rng.multinomial(len(videos), np.full(len(videos), 1 / len(videos)),
                           size=resamples)
  accuracies = (counts @ correct) / (counts @ videos)
  tail = 100 * (1 - confidence) / 2
  low, high = np.percentile(accuracies, [tail, 100 - tail])
  return float(low), float(high)


def _pooled(results: Sequence[FoldResult], classes: Sequence[str],
            groups: Mapping[str, str], grouping: str, top_k: int,
            seed: int) -> Tuple[Dict[str, Any], np.ndarray, List[str]]:
  """Metrics over all held-out predictions, with the interval over groups.

  Returns:
    (evaluate_streams dict with "top1_interval" and "interval_method",
     bool [N] right-or-wrong of the joint prediction, the N paths).
  """
  streams = list(results[0].logits)
  logits = {s: np.concatenate([r.logits[s] for r in results])
            for s in streams}
  labels = np.concatenate([np.asarray(r.labels) for r in results])
  paths = [p for r in results for p in r.paths]
  metrics = metrics_lib.evaluate_streams(logits, labels, classes, top_k)
  correct = np.argmax(metrics_lib.fuse_streams(logits), axis=1) == labels
  names = sorted({groups[p] for p in paths})
  index = {n: i for i, n in enumerate(names)}
  group_of = np.array([index[groups[p]] for p in paths])
  interval = bootstrap_interval(
      np.bincount(group_of, weights=correct, minlength=len(names)),
      np.bincount(group_of, minlength=len(names)), seed)
  return ({**metrics, "top1_interval": list(interval),
           "interval_method": _interval_method(grouping)}, correct, paths)


def build_report(results: Sequence[FoldResult],
                 classes: Sequence[str],
                 groups: Mapping[str, str],
                 subjects: Mapping[str, Optional[str]],
                 grouping: str = "subject",
                 top_k: int = 5,
                 seed: int = 0) -> Dict[str, Any]:
  """The cross-validation report of K trained folds.

  Args:
    results: one per fold, in fold order.
    classes: the K class names, in logit order.
    groups: {path: group} as the folds were made (`folds.video_groups`).
    subjects: {path: subject or None}, for the per-subject table (the same
      as `groups` for folds by subject).
    grouping: "subject" or "video" (then the report says it is optimistic).
    top_k: k of the top-k accuracy.
    seed: the bootstrap's seed.

  Returns:
    A JSON-ready dict:
    `{"grouping": str, "optimistic": bool, "warning": str (folds over videos
      only), "num_folds", "num_videos", "num_subjects": int, "classes",
      "pooled": evaluate_streams dict (top1, top_k, mean_class_accuracy,
        per_class, confusion_matrix, streams, ...) + "top1_interval": [low,
        high], "interval_method": str,
      "per_subject": {subject: {"videos": int, "correct": int, "top1": float,
        "folds": [int] (one fold when folds are by subject)}},
      "folds": [{"index", "eval_subjects", "train_subjects",
        "metrics": evaluate_streams dict, "train_top1", "gap"}],
      "overfitting_gap": {"train_top1", "held_out_top1", "gap"} (means over
        folds; gap = train - held out, in [−1, 1])}`.

  Raises:
    ValueError: for no folds, folds whose held-out videos overlap, streams
      that differ between folds, or inputs `evaluate_streams` rejects.
  """
  if not results:
    raise ValueError("no fold results to report")
  if len({tuple(r.logits) for r in results}) != 1:
    raise ValueError("the folds' results have different streams")
  all_paths = [p for r in results for p in r.paths]
  if len(set(all_paths)) != len(all_paths):
    raise ValueError("a video is held out by two folds")
  pooled, correct, paths = _pooled(results, classes, groups, grouping, top_k,
                                   seed)
  fold_of = {p: r.fold.index for r in results for p in r.paths}

  per_subject: Dict[str, Dict[str, Any]] = {}
  for path, right in zip(paths, correct):
    subject = subjects.get(path)
    if subject is None:
      continue
    entry = per_subject.setdefault(
        subject, {"videos": 0, "correct": 0, "top1": 0.0, "folds": []})
    if fold_of[path] not in entry["folds"]:
      entry["folds"] = sorted(entry["folds"] + [fold_of[path]])
    entry["videos"] += 1
    entry["correct"] += int(right)
    entry["top1"] = entry["correct"] / entry["videos"]

  fold_reports = []
  for r in results:
    metrics = metrics_lib.evaluate_streams(r.logits, r.labels, classes, top_k)
    fold_reports.append({
        "index": r.fold.index,
        "eval_subjects": list(r.fold.eval_subjects),
        "train_subjects": list(r.fold.train_subjects),
        "metrics": metrics,
        "train_top1": r.train_metrics["top1"],
        "gap": r.train_metrics["top1"] - metrics["top1"],
    })
  train_top1 = float(np.mean([f["train_top1"] for f in fold_reports]))
  held_out_top1 = float(np.mean([f["metrics"]["top1"] for f in fold_reports]))
  report = {
      "grouping": grouping,
      "optimistic": grouping != "subject",
      "num_folds": len(results),
      "num_videos": len(paths),
      "num_subjects": len(per_subject),
      "classes": list(classes),
      "pooled": pooled,
      "per_subject": dict(sorted(per_subject.items())),
      "folds": fold_reports,
      "overfitting_gap": {"train_top1": train_top1,
                          "held_out_top1": held_out_top1,
                          "gap": train_top1 - held_out_top1},
  }
  if report["optimistic"]:
    report["warning"] = OPTIMISTIC_WARNING
  return report


def learning_curve(results_by_fraction: Mapping[float, Sequence[FoldResult]],
                   classes: Sequence[str],
                   groups: Mapping[str, str],
                   grouping: str = "subject",
                   top_k: int = 5,
                   seed: int = 0) -> Dict[str, Any]:
  """Held-out accuracy against the number of training subjects.

  Args:
    results_by_fraction: {fraction of each fold's training subjects: the
      folds trained on that fraction (`folds.subset_subjects`)}.
    classes: the class names, in logit order.
    groups: {path: group} as the folds were made.
    grouping: "subject" or "video", as the folds were made.
    top_k: k of the top-k accuracy.
    seed: the bootstrap's seed.

  Returns:
    `{"points": [{"fraction", "train_subjects" (mean over folds),
      "top1", "top1_interval", "mean_class_accuracy", "train_top1" (mean over
      folds)}], "interval_method"}`, points by increasing fraction.
  """
  points = []
  for fraction in sorted(results_by_fraction):
    results = results_by_fraction[fraction]
    pooled, _, _ = _pooled(results, classes, groups, grouping, top_k, seed)
    points.append({
        "fraction": float(fraction),
        "train_subjects": float(np.mean([len(r.fold.train_subjects)
                                         for r in results])),
        "top1": pooled["top1"],
        "top1_interval": pooled["top1_interval"],
        "mean_class_accuracy": pooled["mean_class_accuracy"],
        "train_top1": float(np.mean([r.train_metrics["top1"]
                                     for r in results])),
    })
  return {"points": points, "interval_method": _interval_method(grouping)}


def _interval_method(grouping: str) -> str:
  return INTERVAL_METHOD.format(
      unit="subjects" if grouping == "subject" else "videos")


def _percent(value: float) -> str:
  return f"{100 * value:5.1f}%"


def format_report(report: Mapping[str, Any]) -> str:
  """A readable cross-validation report: pooled, per fold, per subject.

  Args:
    report: a `build_report` dict.

  Returns:
    Text: the headline numbers, the folds, the subjects worst first, then
    the pooled per-class report and confusion matrix
    (`reports.format_report`).
  """
  pooled = report["pooled"]
  low, high = pooled["top1_interval"]
  gap = report["overfitting_gap"]
  lines = []
  if report["optimistic"]:
    lines += [report["warning"], ""]
  lines += [
      f"Cross-validation: {report['num_folds']} folds by "
      f"{report['grouping']}, {report['num_videos']} held-out videos, "
      f"{report['num_subjects']} subjects",
      f"Pooled held-out top-1: {_percent(pooled['top1']).strip()} (95% "
      f"interval {_percent(low).strip()} to {_percent(high).strip()}, "
      f"{pooled['interval_method']})",
      f"Pooled mean class accuracy: "
      f"{_percent(pooled['mean_class_accuracy']).strip()}",
      f"Training accuracy {_percent(gap['train_top1']).strip()} vs held-out "
      f"{_percent(gap['held_out_top1']).strip()} (means over folds): gap "
      f"{100 * gap['gap']:.1f} points",
      "",
      "fold  videos   top-1  mean class  train top-1  eval subjects",
  ]
  for fold in report["folds"]:
    metrics = fold["metrics"]
    lines.append(
        f"{fold['index']:4d}  {metrics['num_videos']:6d}  "
        f"{_percent(metrics['top1'])}  "
        f"{_percent(metrics['mean_class_accuracy'])}"
        f"      {_percent(fold['train_top1'])}       "
        f"{', '.join(fold['eval_subjects'])}")
  if report["per_subject"]:
    lines += ["", "Per subject, worst first:",
              "subject               videos   top-1  folds"]
    for subject, entry in sorted(report["per_subject"].items(),
                                 key=lambda item: (item[1]["top1"], item[0])):
      flag = "  << below the pooled interval" if entry["top1"] < low else ""
      lines.append(f"{subject[:20]:20s}  {entry['videos']:6d}  "
                   f"{_percent(entry['top1'])}  "
                   f"{','.join(map(str, entry['folds'])):>5s}{flag}")
  # The joint model's report only: the per-stream numbers are in the JSON.
  lines += ["", "Pooled over all held-out videos:",
            reports.format_report({k: v for k, v in pooled.items()
                                      if k != "streams"})]
  return "\n".join(lines)


def format_learning_curve(curve: Mapping[str, Any]) -> str:
  """The learning curve as a table: one row per fraction of subjects.

  Args:
    curve: a `learning_curve` dict.

  Returns:
    Text, one line per point, fewest training subjects first.
  """
  lines = ["Learning curve (held-out top-1 by training subjects per fold, "
           f"95% interval: {curve['interval_method']}):",
           "subjects  share   top-1  interval         mean class  train top-1"]
  for p in curve["points"]:
    low, high = p["top1_interval"]
    lines.append(
        f"{p['train_subjects']:8.3g}  {100 * p['fraction']:4.0f}%  "
        f"{_percent(p['top1'])}  {_percent(low)}-{_percent(high).strip():6s}"
        f"   {_percent(p['mean_class_accuracy'])}      "
        f"{_percent(p['train_top1'])}")
  return "\n".join(lines)


def _text(image: np.ndarray, text: str, origin: Tuple[float, float],
          scale: float = 0.45, color: Tuple[int, int, int] = _BLACK,
          align: str = "left") -> None:
  """Draws text with its baseline at origin[1]; align left, right or centre."""
  (width, _), _ = cv2.getTextSize(text, _FONT, scale, 1)
  x = origin[0] - {"left": 0, "right": width, "centre": width / 2}[align]
  cv2.putText(image, text, (int(round(x)), int(round(origin[1]))), _FONT,
              scale, color, 1, cv2.LINE_AA)


def _write_png(path: str, image: np.ndarray) -> None:
  encoded, png = cv2.imencode(".png", image)
  if not encoded:
    raise OSError(f"{path}: OpenCV could not encode the PNG")
  fileio.write_bytes(path, png.tobytes())


def render_per_subject(report: Mapping[str, Any]) -> np.ndarray:
  """Draws each subject's held-out top-1 as a bar, worst at the top.

  Subjects below the pooled top-1's 95% interval are red; the pooled top-1
  is a vertical line over its interval's band.

  Args:
    report: a `build_report` dict with at least one subject.

  Returns:
    A [H, W, 3] uint8 BGR image.

  Raises:
    ValueError: if the report has no subjects.
  """
  subjects = sorted(report["per_subject"].items(),
                    key=lambda item: (item[1]["top1"], item[0]))
  if not subjects:
    raise ValueError("the report has no per-subject results to draw")
  pooled = report["pooled"]
  low, high = pooled["top1_interval"]
  row, left, width, top = 22, 210, 420, 60
  height = top + row * len(subjects) + 50
  # The right margin holds a 100% bar's label.
  image = np.full((height, left + width + 60, 3), 255, np.uint8)

  def x_at(value: float) -> int:
    return int(round(left + value * width))

  cv2.rectangle(image, (x_at(low), top - 5), (x_at(high),
                                               top + row * len(subjects)),
                _BAND, cv2.FILLED)
  for tick in np.linspace(0, 1, 6):
    cv2.line(image, (x_at(tick), top - 5),
             (x_at(tick), top + row * len(subjects)), _LIGHT_GREY, 1)
    _text(image, f"{100 * tick:.0f}%", (x_at(tick),
                                        top + row * len(subjects) + 18),
          0.4, align="centre")
  for i, (subject, entry) in enumerate(subjects):
    y = top + i * row
    color = _RED if entry["top1"] < low else _BLUE
    cv2.rectangle(image, (left, y + 3), (max(x_at(entry["top1"]), left + 1),
                                         y + row - 3), color, cv2.FILLED)
    _text(image, f"{subject[:18]} ({entry['videos']})", (left - 8,
                                                         y + row - 7),
          align="right")
    _text(image, _percent(entry["top1"]).strip(),
          (x_at(entry["top1"]) + 4, y + row - 7), 0.4, color)
  cv2.line(image, (x_at(pooled["top1"]), top - 5),
           (x_at(pooled["top1"]), top + row * len(subjects)), _ORANGE, 2)
  title = "Held-out top-1 per subject (videos)"
  if report["optimistic"]:
    title += " - OPTIMISTIC: folds over videos"
  _text(image, title, (10, 22), 0.55)
  _text(image, f"pooled {_percent(pooled['top1']).strip()} (orange), 95% "
        f"interval {_percent(low).strip()}-{_percent(high).strip()} (band); "
        "red: below it", (10, 44), 0.4, _GREY)
  _text(image, "held-out top-1", (left + width / 2, height - 8), 0.45,
        align="centre")
  return image


def render_learning_curve(curve: Mapping[str, Any]) -> np.ndarray:
  """Draws held-out and training top-1 against the training subjects.

  Args:
    curve: a `learning_curve` dict with at least one point.

  Returns:
    A [H, W, 3] uint8 BGR image: held-out top-1 with its 95% interval (blue)
    and training top-1 (grey), x the mean training subjects per fold.
  """
  points = curve["points"]
  if not points:
    raise ValueError("the learning curve has no points to draw")
  left, top, width, height = 70, 50, 460, 260
  image = np.full((top + height + 60, left + width + 60, 3), 255, np.uint8)
  most = max(p["train_subjects"] for p in points)

  def at(subjects: float, accuracy: float) -> Tuple[int, int]:
    return (int(round(left + subjects / most * width)),
            int(round(top + (1 - accuracy) * height)))

  for tick in np.linspace(0, 1, 6):
    cv2.line(image, at(0, tick), at(most, tick), _LIGHT_GREY, 1)
    _text(image, f"{100 * tick:.0f}%", (left - 8, at(0, tick)[1] + 5), 0.4,
          align="right")
  for p in points:
    x = at(p["train_subjects"], 0)[0]
    _text(image, f"{p['train_subjects']:.3g}", (x, top + height + 20), 0.4,
          align="centre")
  cv2.rectangle(image, at(0, 1), at(most, 0), _GREY, 1)
  for key, color in (("train_top1", _GREY), ("top1", _BLUE)):
    corners = np.array([at(p["train_subjects"], p[key]) for p in points],
                       np.int32)
    cv2.polylines(image, [corners], False, color, 2, cv2.LINE_AA)
    for corner in corners:
      cv2.circle(image, tuple(int(c) for c in corner), 4, color, cv2.FILLED,
                 cv2.LINE_AA)
  for p in points:
    low, high = p["top1_interval"]
    cv2.line(image, at(p["train_subjects"], low), at(p["train_subjects"],
                                                     high), _BLUE, 1)
    _text(image, _percent(p["top1"]).strip(),
          (at(p["train_subjects"], p["top1"])[0] + 6,
           at(p["train_subjects"], p["top1"])[1] + 16), 0.4, _BLUE)
  _text(image, "Held-out top-1 (blue, 95% interval) and training top-1 "
        "(grey)", (10, 22), 0.5)
  _text(image, "training subjects per fold", (left + width / 2,
                                              top + height + 45), 0.45,
        align="centre")
  return image


def write_report(train_dir: str, report: Mapping[str, Any],
                 curve: Optional[Mapping[str, Any]] = None) -> Dict[str, str]:
  """Writes the report's JSON, text and pictures atomically.

  Args:
    train_dir: the cross-validation run's directory.
    report: a `build_report` dict.
    curve: a `learning_curve` dict, if one was made.

  Returns:
    {"json", "text", "per_subject_png" (when there are subjects),
     "learning_curve_json", "learning_curve_png" (with a curve)}: paths.
  """
  written = {"json": os.path.join(train_dir, REPORT_JSON),
             "text": os.path.join(train_dir, REPORT_TEXT)}
  fileio.write_json(written["json"], dict(report))
  fileio.write_text(written["text"], format_report(report) + "\n")
  if report["per_subject"]:
    written["per_subject_png"] = os.path.join(train_dir, PER_SUBJECT_PNG)
    _write_png(written["per_subject_png"], render_per_subject(report))
  if curve is not None:
    written["learning_curve_json"] = os.path.join(train_dir,
                                                  LEARNING_CURVE_JSON)
    written["learning_curve_png"] = os.path.join(train_dir,
                                                 LEARNING_CURVE_PNG)
    fileio.write_json(written["learning_curve_json"], dict(curve))
    _write_png(written["learning_curve_png"], render_learning_curve(curve))
  return written
