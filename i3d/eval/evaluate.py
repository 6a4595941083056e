"""Evaluating a model on prepared videos, with multi-view testing.

`evaluate_model` runs a model over a split of a prepared cache (the run's own
held-out split, or new labelled videos prepared with the run's preprocessing
by `prepare_eval_data`), averaging each stream's logits over the views;
`write_eval_outputs` writes the reports; `evaluate_train_dir` is train.py's
evaluation after training.
"""

import dataclasses
import os
import time
from typing import Any, Dict, List, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from i3d import config as config_lib
from i3d import precision
from i3d import streams as streams_lib
from i3d import two_stream
from i3d.data import cache
from i3d.data import pipeline
from i3d.data import sources
from i3d.eval import classify
from i3d.eval import metrics as metrics_lib
from i3d.eval import reports
from i3d.eval import runs

# Files that `write_eval_outputs` writes in its output directory.
METRICS_JSON = "metrics.json"
PREDICTIONS_CSV = "predictions.csv"
CONFUSION_PNG = "confusion_matrix.png"
# Where evaluate.py prepares new videos and writes its reports, in train_dir.
EVAL_CACHE_SUBDIR = "eval_cache"
EVAL_OUTPUT_SUBDIR = "eval"

# The metrics of train.py's evaluation after training, in train_dir.
METRICS_FILE = "eval_metrics.json"
_PROGRESS_INTERVAL_S = 10.0


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """The evaluation of a model on a set of prepared videos.

  Attributes:
    metrics: the `metrics.evaluate_streams` dict: the joint model's (or the
      only stream's) `compute_metrics` keys, and "streams" with each stream's
      and, for two streams, "joint".
    classes: the K class names, in logit order.
    paths: the N video files.
    labels: their N true class names.
    logits: stream name -> [N, K] logits averaged over the views; "joint" (the
      sum of the streams) included.
  """
  metrics: Dict[str, Any]
  classes: List[str]
  paths: List[str]
  labels: List[str]
  logits: Dict[str, np.ndarray]


def prepare_eval_data(run: runs.TrainedModel,
                      cache_dir: str,
                      data_dir: Optional[str] = None,
                      manifest: Optional[str] = None,
                      num_workers: int = 1) -> cache.PrepareReport:
  """Prepares new labelled videos with the run's preprocessing settings.

  Every video goes to the cache's "train" split unless the manifest fixes
  splits (evaluate them all with `split=None`). Videos that cannot be decoded
  are in the report's failures; the others are prepared.

  Args:
    run: the loaded run.
    cache_dir: where to prepare them (reused across calls: unchanged videos
      are not prepared again).
    data_dir: a folder with one sub-folder per class; or
    manifest: a CSV `path,label[,subject][,split]` (see `i3d.data.sources`).
    num_workers: processes preparing videos.

  Returns:
    The preparation's report.

  Raises:
    DatasetError: if the dataset cannot be read as given, e.g. a class folder
      or label the run does not know.
  """
  return cache.prepare_dataset(
      cache_dir, data_dir=data_dir, manifest=manifest, classes=run.classes,
      streams=run.streams, config=run.preprocess, num_workers=num_workers,
      eval_fraction=0.0)


def _as_classifier(model: two_stream.TwoStreamI3d | classify.Classifier,
                   config: config_lib.TrainConfig) -> classify.Classifier:
  if isinstance(model, classify.Classifier):
    if list(model.classes) != list(config.classes):
      raise ValueError("the classifier's classes differ from the config's")
    return model
  return classify.Classifier(
      model, config.classes,
      bfloat16=precision.use_inference_bfloat16(config.inference_bfloat16))


def _class_index_map(cache_classes: Sequence[str],
                     model_classes: Sequence[str],
                     cache_dir: str) -> np.ndarray:
  """Maps the cache's label indices to the model's, by class name."""
  unknown = [name for name in cache_classes if name not in model_classes]
  if unknown:
    raise runs.ModelError(
        f"{cache_dir}: prepared with class(es) {unknown} that the model does "
        f"not have (its classes: {', '.join(model_classes)})")
  return np.array([list(model_classes).index(name) for name in cache_classes])


def _check_preprocessing(prepared: config_lib.PreprocessConfig,
                         config: config_lib.TrainConfig,
                         cache_dir: str) -> None:
  """Refuses a cache whose frames differ from those the run trained on.

  Frame rate and size always matter; the flow algorithm where flow is used.
  `max_frames` may differ (evaluation on longer or shorter videos).
  """
  if config.preprocess is None:
    return
  names = ["fps", "short_side"] + (
      ["flow_algorithm"] if "flow" in config.streams else [])
  differences = [f"{name} {getattr(prepared, name)} (the run: "
                 f"{getattr(config.preprocess, name)})" for name in names
                 if getattr(prepared, name) != getattr(config.preprocess,
                                                       name)]
  if differences:
    raise runs.ModelError(
        f"{cache_dir}: prepared with {', '.join(differences)}; the model "
        "would see other inputs than it was trained on. Evaluate new videos "
        "with --data_dir or --manifest, which prepares them the run's way")


def evaluate_model(model: two_stream.TwoStreamI3d | classify.Classifier,
                   config: config_lib.TrainConfig,
                   cache_dir: Optional[str] = None,
                   split: Optional[str] = "eval",
                   top_k: int = 5) -> EvalResult:
  """Evaluates a model on a split of a prepared cache, with multi-view testing.

  Each video gives `config.eval_num_clips` evenly spaced clips of
  `config.eval_num_frames` frames (None: the whole video, a long one as
  consecutive clips of `preprocess.MAX_CLIP_FRAMES`, so that memory does not
  grow with its length; see `pipeline.make_eval_dataset`) times
  `config.eval_num_crops` crops of `config.crop_size` pixels; each stream's
  logits are averaged over these views, and the joint logits are the sum of
  the streams' (`metrics.evaluate_streams`).

  Args:
    model: the model (e.g. `Trainer.model` after training), or a Classifier
      of it (`runs.TrainedModel.classifier`) to reuse its traced graph.
    config: the run's configuration, for the classes, streams, crop and
      views; see `runs.with_views` to change the views.
    cache_dir: the prepared cache; default the run's training cache.
    split: "eval", "train", or None for every video of the cache.
    top_k: k of the top-k accuracy.

  Returns:
    The metrics, the videos, their labels and logits.

  Raises:
    ModelError: if the cache has classes the model lacks, was prepared
      with other preprocessing than the run's, holds no video to evaluate,
      or its files cannot be read.
    DatasetError: if the cache, split, streams or crop do not fit.
    ValueError: for impossible views.
  """
  cache_dir = cache_dir or config.cache_dir
  classes = list(config.classes)
  classifier = _as_classifier(model, config)
  info = cache.read_cache(cache_dir)
  _check_preprocessing(info.config, config, cache_dir)
  to_model_index = _class_index_map(info.classes, classes, cache_dir)
  splits = [split] if split else [s for s in sources.SPLITS if info.splits[s]]
  entries = [(s, e) for s in splits for e in info.split_entries(s)]
  if not entries:
    raise runs.ModelError(
        f"{cache_dir}: no prepared video to evaluate in "
        f"{'the ' + repr(split) + ' split' if split else 'the cache'}")
  logging.info("Evaluating %d videos of %s (%s)", len(entries), cache_dir,
               runs.describe_views(config))
  stream_logits: Dict[str, List[np.ndarray]] = {s: [] for s in config.streams}
  paths, label_indices = [], []
  started = last_log = time.monotonic()
  for split_name in splits:
    views = pipeline.make_eval_dataset(
        cache_dir, split=split_name, streams=config.streams,
        num_frames=config.eval_num_frames, crop_size=config.crop_size,
        num_clips=config.eval_num_clips, num_crops=config.eval_num_crops)
    split_entries = info.split_entries(split_name)
    # A whole video may come in several elements (clips of a long video),
    # interleaved with other videos': its views are gathered, then averaged.
    video_views: Dict[int, Dict[str, List[np.ndarray]]] = {}
    try:
      for element in views:
        logits = classifier.logits(
            {s: element[s].numpy() for s in config.streams}, any_length=True)
        gathered = video_views.setdefault(
            int(element["index"]), {s: [] for s in config.streams})
        for stream in config.streams:
          gathered[stream].append(logits[stream])
        if time.monotonic() - last_log > _PROGRESS_INTERVAL_S:
          last_log = time.monotonic()
          done = len(paths) + len(video_views)
          logging.info("Evaluated %d/%d videos, ETA %.0f s", done,
                       len(entries),
                       (last_log - started) / done * (len(entries) - done))
    except tf.errors.OpError as e:
      raise runs.ModelError(
          f"{cache_dir}: cannot read the prepared videos of the {split_name!r} "
          f"split ({e.message.splitlines()[0]}); prepare the data again") from e
    for index, entry in enumerate(split_entries):
      for stream in config.streams:
        stream_logits[stream].append(metrics_lib.average_views(
            np.concatenate(video_views[index][stream])))
      paths.append(os.path.join(info.root, entry.path))
      label_indices.append(to_model_index[entry.label_index])
  logits = {s: np.stack(v) for s, v in stream_logits.items()}
  metrics = metrics_lib.evaluate_streams(logits, np.array(label_indices),
                                         classes, top_k)
  logits[streams_lib.JOINT] = metrics_lib.fuse_streams(
      {s: logits[s] for s in config.streams})
  return EvalResult(metrics=metrics, classes=classes, paths=paths,
                    labels=[classes[i] for i in label_indices], logits=logits)


def write_eval_outputs(result: EvalResult, output_dir: str) -> Dict[str, str]:
  """Writes an evaluation's metrics JSON, per-video CSV and confusion PNGs.

  Files, each written atomically:
    metrics.json                  `result.metrics` (the evaluate_streams dict)
    predictions.csv               path, label, prediction and probabilities of
                                  each video (joint model)
    confusion_matrix.png          the joint (or only stream's) confusion matrix
    confusion_matrix_<stream>.png each stream's, with two streams

  Args:
    result: an evaluation.
    output_dir: the directory (created if needed).

  Returns:
    {"metrics": path, "predictions": path, "confusion_matrix": path,
     "confusion_matrix_<stream>": path, ...}.
  """
  written = {
      "metrics": os.path.join(output_dir, METRICS_JSON),
      "predictions": os.path.join(output_dir, PREDICTIONS_CSV),
      "confusion_matrix": os.path.join(output_dir, CONFUSION_PNG),
  }
  reports.write_metrics_json(written["metrics"], result.metrics)
  reports.write_predictions_csv(written["predictions"], result.paths,
                                   result.labels,
                                   result.logits[streams_lib.JOINT],
                                   result.classes)
  streams = result.metrics["streams"]
  headline = streams_lib.JOINT if streams_lib.JOINT in streams else next(
      iter(streams))
  reports.write_confusion_matrix_png(
      result.metrics["confusion_matrix"], result.classes,
      written["confusion_matrix"], title=f"Confusion matrix ({headline})")
  for name, stream_metrics in streams.items():
    if name != headline:
      key = f"confusion_matrix_{name}"
      written[key] = os.path.join(output_dir, f"{key}.png")
      reports.write_confusion_matrix_png(
          stream_metrics["confusion_matrix"], result.classes, written[key],
          title=f"Confusion matrix ({name})")
  return written


def evaluate_train_dir(train_dir: str,
                       checkpoint: Optional[str] = None,
                       split: str = "eval",
                       top_k: int = 5,
                       output_json: Optional[str] = None,
                       output_dir: Optional[str] = None) -> EvalResult:
  """Evaluates a run on its own held-out split, as configured at training.

  The call for train.py after training: the run's latest checkpoint (or
  `checkpoint`) on the `split` of its training cache, with the run's
  evaluation views; the metrics go to `train_dir/eval_metrics.json`.

  Args:
    train_dir: the run's directory.
    checkpoint: a checkpoint prefix; default the latest.
    split: the split of the training cache.
    top_k: k of the top-k accuracy.
    output_json: where to write the metrics; default
      `train_dir/eval_metrics.json`.
    output_dir: if given, also write the `write_eval_outputs` files there.

  Returns:
    The evaluation.

  Raises:
    ModelError: see `load_run` and `evaluate_model`.
    DatasetError: if the training cache is gone or does not fit.
  """
  run = runs.load_run(train_dir, checkpoint)
  result = evaluate_model(run.classifier, run.config, split=split, top_k=top_k)
  reports.write_metrics_json(
      output_json or os.path.join(train_dir, METRICS_FILE),
      result.metrics)
  if output_dir:
    write_eval_outputs(result, output_dir)
  return result
