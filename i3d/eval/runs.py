"""Running a model trained by train.py: evaluation, predictions, timelines.

A training run's `train_dir` (see `i3d.training`) gives everything needed to
run its model the way it was trained: the class list, the streams, the crop and
evaluation clip settings (config.json), the weights (ckpt/), and, through the
training cache's metadata, the preprocessing settings (frame rate, frame size,
optical flow algorithm). This module loads such a run and

  * evaluates it on a split of a prepared cache, with multi-view testing
    (`evaluate_model`, `evaluate_train_dir`), writing the reports of
    `i3d.evaluation` (`write_eval_outputs`);
  * prepares new labelled videos with the run's preprocessing
    (`prepare_eval_data`);
  * classifies a video file as a whole (`classify_video`) or in sliding
    windows (`classify_timeline`), for the exercise model or any
    `inference.Classifier` (the Kinetics models too).

The metrics and pictures themselves are model-agnostic and live in
`i3d.evaluation`.
"""

import collections
import dataclasses
import itertools
import os
import re
import time
from typing import (Any, Deque, Dict, Iterator, List, Mapping, Optional,
                    Sequence, Tuple)

from absl import logging
import numpy as np
import tensorflow as tf

from i3d import checkpoints
from i3d.data import cache as dataset
from i3d.eval import metrics as evaluation
from i3d.video import flow
from i3d.eval import classify as inference
from i3d.train import loop as training
from i3d import two_stream
from i3d.video import preprocess as video

# Files that `write_eval_outputs` writes in its output directory.
METRICS_JSON = "metrics.json"
PREDICTIONS_CSV = "predictions.csv"
CONFUSION_PNG = "confusion_matrix.png"
# Where evaluate.py prepares new videos and writes its reports, in train_dir.
EVAL_CACHE_SUBDIR = "eval_cache"
EVAL_OUTPUT_SUBDIR = "eval"

# Object-based checkpoint keys of a train.py run's logits biases:
# model/streams/<stream>/logits/conv/b, of shape [num_classes].
_LOGITS_BIAS_KEY = re.compile(
    r"^model/streams/(\w+)/logits/conv/b/\.ATTRIBUTES/VARIABLE_VALUE$")
_PROGRESS_INTERVAL_S = 10.0


class ModelError(ValueError):
  """A training run or checkpoint that cannot be loaded as asked."""


@dataclasses.dataclass(frozen=True)
class TrainedModel:
  """A training run's model, ready to classify.

  Attributes:
    classifier: the model with the checkpoint's weights and the run's classes.
    config: the run's TrainConfig (classes, streams, crop, eval settings).
    checkpoint: the checkpoint prefix the weights come from.
    preprocess: the preprocessing settings of the run's training data.
  """
  classifier: inference.Classifier
  config: training.TrainConfig
  checkpoint: str
  preprocess: video.PreprocessConfig

  @property
  def classes(self) -> List[str]:
    return list(self.config.classes)

  @property
  def streams(self) -> Tuple[str, ...]:
    return self.config.streams


@dataclasses.dataclass(frozen=True)
class EvalResult:
  """The evaluation of a model on a set of prepared videos.

  Attributes:
    metrics: the `evaluation.evaluate_streams` dict: the joint model's (or the
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


# ----------------------------------------------------------------------------
# Loading a training run.


def _checkpoint_logits(path: str) -> Dict[str, int]:
  """The class count of each stream's logits in a train.py checkpoint.

  Returns:
    {stream: num_classes}; empty when the checkpoint is not object-based with
    train.py's layout.
  """
  try:
    shapes = dict(tf.train.list_variables(path))
  except (tf.errors.OpError, ValueError) as e:
    raise ModelError(f"{path}: cannot read the checkpoint: "
                     f"{str(e).splitlines()[0]}") from e
  return {match.group(1): shape[0] for match, shape in (
      (_LOGITS_BIAS_KEY.match(name), shape) for name, shape in shapes.items())
          if match}


def _check_checkpoint_fits(path: str, train_dir: str,
                           config: training.TrainConfig) -> None:
  """Explains, in the user's terms, a checkpoint that does not fit a run."""
  logits = _checkpoint_logits(path)
  config_file = os.path.join(train_dir, training.CONFIG_FILE)
  if not logits:
    raise ModelError(
        f"{path}: not a checkpoint written by train.py (no model/streams/*/"
        "logits variables); for a DeepMind-layout Kinetics checkpoint use "
        "--checkpoint without --checkpoint_dir")
  if set(logits) != set(config.streams):
    raise ModelError(
        f"{path}: holds the {'+'.join(sorted(logits))} stream(s) but "
        f"{config_file} trains {'+'.join(config.streams)}; the checkpoint "
        "belongs to another run")
  for stream in config.streams:
    num_classes = logits[stream]
    if num_classes != len(config.classes):
      raise ModelError(
          f"{path}: the {stream} logits have {num_classes} classes but "
          f"{config_file} lists {len(config.classes)} "
          f"({', '.join(config.classes)}); the class list does not match the "
          "checkpoint")


def _check_classes(expected: Sequence[str], given: Sequence[str],
                   train_dir: str) -> None:
  """Raises ModelError when a user's class list differs from the run's."""
  expected, given = list(expected), list(given)
  if given == expected:
    return
  differences = []
  missing = [name for name in expected if name not in given]
  extra = [name for name in given if name not in expected]
  if missing:
    differences.append(f"missing {missing}")
  if extra:
    differences.append(f"not in the checkpoint {extra}")
  if not differences:
    differences.append("same names in another order")
  raise ModelError(
      f"the classes given ({', '.join(given)}) differ from the class list of "
      f"the checkpoint in {train_dir} ({', '.join(expected)}): "
      f"{'; '.join(differences)}. Leave the classes out to use the "
      "checkpoint's")


def run_preprocess_config(
    config: training.TrainConfig) -> video.PreprocessConfig:
  """The preprocessing settings of a run's training data.

  They are read from the training cache's metadata; if the cache is gone
  (e.g. the run was copied to another machine), the defaults of
  `video.PreprocessConfig` are used, with a warning.

  Args:
    config: the run's configuration.

  Returns:
    The settings (fps, short_side, flow_algorithm, max_frames).
  """
  try:
    return dataset.read_cache(config.cache_dir).config
  except (dataset.DatasetError, OSError, KeyError, TypeError) as e:
    default = video.PreprocessConfig()
    logging.warning(
        "Cannot read the preprocessing settings of the training cache (%s); "
        "using the defaults %s. Predictions are off if the run used others.",
        e, default)
    return default


def load_run(train_dir: str,
             checkpoint: Optional[str] = None,
             classes: Optional[Sequence[str]] = None) -> TrainedModel:
  """Loads a train.py run's model for evaluation or prediction.

  Args:
    train_dir: the run's directory (config.json, ckpt/).
    checkpoint: a checkpoint prefix (`train_dir/ckpt/ckpt-N`) or a directory
      holding checkpoints; default the run's latest.
    classes: if given, the class list the caller expects: it must equal the
      run's (same names, same order).

  Returns:
    The model with the checkpoint's weights, the run's configuration and
    preprocessing settings.

  Raises:
    ModelError: if train_dir is missing, holds no checkpoint or no
      config.json, the classes differ from the run's, or the checkpoint does
      not fit the run's model (other classes or streams, not a train.py
      checkpoint).
  """
  if not os.path.isdir(train_dir):
    raise ModelError(f"{train_dir}: no such directory")
  try:
    path = (checkpoints.checkpoint_prefix(checkpoint) if checkpoint else
            training.latest_checkpoint(train_dir))
  except (FileNotFoundError, checkpoints.CheckpointError) as e:
    raise ModelError(f"{e}; train a model into it with train.py, or pass "
                     "--checkpoint") from e
  try:
    config = training.load_config(train_dir)
  except FileNotFoundError as e:
    raise ModelError(str(e)) from e
  if classes is not None:
    _check_classes(config.classes, classes, train_dir)
  _check_checkpoint_fits(path, train_dir, config)
  try:
    model, config = training.load_trained_model(train_dir, path)
  except (FileNotFoundError, training.TrainingError) as e:
    # TensorFlow's explanation can run over many lines; the first says it.
    raise ModelError(str(e).splitlines()[0]) from e
  logging.info("Loaded %s (%s, %d classes)", path, "+".join(config.streams),
               len(config.classes))
  return TrainedModel(classifier=inference.Classifier(model, config.classes),
                      config=config, checkpoint=path,
                      preprocess=run_preprocess_config(config))


def with_views(config: training.TrainConfig,
               num_frames: Optional[int] = None,
               num_clips: Optional[int] = None,
               num_crops: Optional[int] = None,
               whole_video: bool = False) -> training.TrainConfig:
  """A run's configuration with other evaluation views.

  Args:
    config: the run's configuration.
    num_frames: frames per clip; None keeps the run's `eval_num_frames`.
    num_clips: evenly spaced clips per video; None keeps the run's.
    num_crops: 1 (centre) or 3 crops; None keeps the run's.
    whole_video: one clip of each whole video (then num_frames must be None
      and the clips 1).

  Returns:
    The configuration to pass to `evaluate_model`.

  Raises:
    ValueError: for impossible views.
  """
  if whole_video and num_frames is not None:
    raise ValueError("give a clip length or the whole video, not both")
  frames = None if whole_video else (
      config.eval_num_frames if num_frames is None else num_frames)
  clips = config.eval_num_clips if num_clips is None else num_clips
  crops = config.eval_num_crops if num_crops is None else num_crops
  if frames is not None and frames < 1:
    raise ValueError(f"num_frames must be at least 1, got {frames}")
  if clips < 1:
    raise ValueError(f"num_clips must be at least 1, got {clips}")
  if crops not in (1, 3):
    raise ValueError(f"num_crops must be 1 or 3, got {crops}")
  if frames is None and clips != 1:
    raise ValueError(
        f"{clips} clips of the whole video would be the same clip; give a "
        "clip length (num_frames) for several clips")
  return dataclasses.replace(config, eval_num_frames=frames,
                             eval_num_clips=clips, eval_num_crops=crops)


def describe_views(config: training.TrainConfig) -> str:
  """E.g. "2 clips of 64 frames, 3 crops of 224 px"."""
  if config.eval_num_frames is None:
    clips = "the whole video"
  else:
    plural = "s" if config.eval_num_clips > 1 else ""
    clips = (f"{config.eval_num_clips} clip{plural} of "
             f"{config.eval_num_frames} frames")
  crops = "centre crop" if config.eval_num_crops == 1 else (
      f"{config.eval_num_crops} crops")
  return f"{clips}, {crops} of {config.crop_size} px"


# ----------------------------------------------------------------------------
# Evaluation on prepared videos.


def prepare_eval_data(run: TrainedModel,
                      cache_dir: str,
                      data_dir: Optional[str] = None,
                      manifest: Optional[str] = None,
                      num_workers: int = 1) -> dataset.PrepareReport:
  """Prepares new labelled videos with the run's preprocessing settings.

  Every video goes to the cache's "train" split unless the manifest fixes
  splits (evaluate them all with `split=None`). Videos that cannot be decoded
  are in the report's failures; the others are prepared.

  Args:
    run: the loaded run.
    cache_dir: where to prepare them (reused across calls: unchanged videos
      are not prepared again).
    data_dir: a folder with one sub-folder per class; or
    manifest: a CSV `path,label[,subject][,split]` (see `dataset`).
    num_workers: processes preparing videos.

  Returns:
    The preparation's report.

  Raises:
    DatasetError: if the dataset cannot be read as given, e.g. a class folder
      or label the run does not know.
  """
  return dataset.prepare_dataset(
      cache_dir, data_dir=data_dir, manifest=manifest, classes=run.classes,
      streams=run.streams, config=run.preprocess, num_workers=num_workers,
      eval_fraction=0.0)


def _as_classifier(model: two_stream.TwoStreamI3d | inference.Classifier,
                   classes: Sequence[str]) -> inference.Classifier:
  if isinstance(model, inference.Classifier):
    if list(model.classes) != list(classes):
      raise ValueError("the classifier's classes differ from the config's")
    return model
  return inference.Classifier(model, classes)


def _class_index_map(cache_classes: Sequence[str],
                     model_classes: Sequence[str],
                     cache_dir: str) -> np.ndarray:
  """Maps the cache's label indices to the model's, by class name."""
  unknown = [name for name in cache_classes if name not in model_classes]
  if unknown:
    raise ModelError(
        f"{cache_dir}: prepared with class(es) {unknown} that the model does "
        f"not have (its classes: {', '.join(model_classes)})")
  return np.array([list(model_classes).index(name) for name in cache_classes])


def evaluate_model(model: two_stream.TwoStreamI3d | inference.Classifier,
                   config: training.TrainConfig,
                   cache_dir: Optional[str] = None,
                   split: Optional[str] = "eval",
                   top_k: int = 5) -> EvalResult:
  """Evaluates a model on a split of a prepared cache, with multi-view testing.

  Each video gives `config.eval_num_clips` evenly spaced clips of
  `config.eval_num_frames` frames (None: the whole video) times
  `config.eval_num_crops` crops of `config.crop_size` pixels; each stream's
  logits are averaged over these views, and the joint logits are the sum of
  the streams' (`evaluation.evaluate_streams`).

  Args:
    model: the model (e.g. `Trainer.model` after training), or a Classifier
      of it (`TrainedModel.classifier`) to reuse its traced graph.
    config: the run's configuration, for the classes, streams, crop and
      views; see `with_views` to change the views.
    cache_dir: the prepared cache; default the run's training cache.
    split: "eval", "train", or None for every video of the cache.
    top_k: k of the top-k accuracy.

  Returns:
    The metrics, the videos, their labels and logits.

  Raises:
    ModelError: if the cache has classes the model lacks, holds no video
      to evaluate, or its files cannot be read.
    DatasetError: if the cache, split, streams or crop do not fit.
    ValueError: for impossible views.
  """
  cache_dir = cache_dir or config.cache_dir
  classes = list(config.classes)
  classifier = _as_classifier(model, classes)
  info = dataset.read_cache(cache_dir)
  to_model_index = _class_index_map(info.classes, classes, cache_dir)
  splits = [split] if split else [s for s in dataset.SPLITS if info.splits[s]]
  entries = [(s, e) for s in splits for e in info.split_entries(s)]
  if not entries:
    raise ModelError(
        f"{cache_dir}: no prepared video to evaluate in "
        f"{'the ' + repr(split) + ' split' if split else 'the cache'}")
  logging.info("Evaluating %d videos of %s (%s)", len(entries), cache_dir,
               describe_views(config))
  stream_logits: Dict[str, List[np.ndarray]] = {s: [] for s in config.streams}
  paths, label_indices = [], []
  started = last_log = time.monotonic()
  for split_name in splits:
    views = dataset.make_eval_dataset(
        cache_dir, split=split_name, streams=config.streams,
        num_frames=config.eval_num_frames, crop_size=config.crop_size,
        num_clips=config.eval_num_clips, num_crops=config.eval_num_crops)
    split_entries = info.split_entries(split_name)
    try:
      for element in views:
        logits = classifier.logits(
            {s: element[s].numpy() for s in config.streams}, any_length=True)
        for stream in config.streams:
          stream_logits[stream].append(evaluation.average_views(logits[stream]))
        entry = split_entries[int(element["index"])]
        paths.append(os.path.join(info.root, entry.path))
        label_indices.append(to_model_index[int(element["label"])])
        if time.monotonic() - last_log > _PROGRESS_INTERVAL_S:
          last_log = time.monotonic()
          elapsed = last_log - started
          logging.info("Evaluated %d/%d videos, ETA %.0f s", len(paths),
                       len(entries),
                       elapsed / len(paths) * (len(entries) - len(paths)))
    except tf.errors.OpError as e:
      raise ModelError(
          f"{cache_dir}: cannot read the prepared videos of the {split_name!r} "
          f"split ({e.message.splitlines()[0]}); prepare the data again") from e
  logits = {s: np.stack(v) for s, v in stream_logits.items()}
  metrics = evaluation.evaluate_streams(logits, np.array(label_indices),
                                        classes, top_k)
  logits[two_stream.JOINT] = evaluation.fuse_streams(
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
  evaluation.write_metrics_json(written["metrics"], result.metrics)
  evaluation.write_predictions_csv(written["predictions"], result.paths,
                                   result.labels,
                                   result.logits[two_stream.JOINT],
                                   result.classes)
  streams = result.metrics["streams"]
  headline = two_stream.JOINT if two_stream.JOINT in streams else next(
      iter(streams))
  evaluation.write_confusion_matrix_png(
      result.metrics["confusion_matrix"], result.classes,
      written["confusion_matrix"], title=f"Confusion matrix ({headline})")
  for name, metrics in streams.items():
    if name != headline:
      key = f"confusion_matrix_{name}"
      written[key] = os.path.join(output_dir, f"{key}.png")
      evaluation.write_confusion_matrix_png(
          metrics["confusion_matrix"], result.classes, written[key],
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
  run = load_run(train_dir, checkpoint)
  result = evaluate_model(run.classifier, run.config, split=split, top_k=top_k)
  evaluation.write_metrics_json(
      output_json or os.path.join(train_dir, training.METRICS_FILE),
      result.metrics)
  if output_dir:
    write_eval_outputs(result, output_dir)
  return result


# ----------------------------------------------------------------------------
# Classifying video files.


def classify_video(classifier: inference.Classifier,
                   path: str,
                   preprocess: video.PreprocessConfig,
                   crop_size: int) -> Dict[str, np.ndarray]:
  """Classifies a video file as one clip: all its frames, centre-cropped.

  Args:
    classifier: the model (`TrainedModel.classifier`, or a Kinetics one).
    path: the video file.
    preprocess: decoding settings; `max_frames` limits the clip (DeepMind
      tests on up to 250 frames).
    crop_size: side of the centre crop.

  Returns:
    {stream: [K] logits, ..., "joint": [K]}.

  Raises:
    VideoError: if the file cannot be decoded or is too short for flow.
    ValueError: if the crop is larger than the frames.
  """
  clips = video.load_clip(path, classifier.streams, preprocess, crop_size)
  logits = classifier.logits({s: clip[None] for s, clip in clips.items()},
                             any_length=True)
  return {name: value[0] for name, value in logits.items()}


def format_prediction(path: str, top_k: Sequence[Mapping[str, Any]]) -> str:
  """A readable prediction: the video, then one line per class, best first.

  Args:
    path: the video.
    top_k: the "top_k" list of `inference.prediction_json`.

  Returns:
    E.g. "squat.mp4\n  91.2%  squat_correct\n   5.1%  squat_not-low".
  """
  return "\n".join([path] + [f"  {100 * p['probability']:5.1f}%  {p['label']}"
                             for p in top_k])


def _model_frames(path: str, streams: Sequence[str],
                  preprocess: video.PreprocessConfig,
                  crop_size: int) -> Iterator[Dict[str, np.ndarray]]:
  """Decodes a video lazily into centre-cropped model inputs, frame by frame.

  Only two full-size frames (for the flow) are held at a time.

  Yields:
    {stream: float32 (crop, crop, C) in [-1, 1]} per frame.

  Raises:
    VideoError: if the file cannot be decoded or is too short for flow.
  """
  if crop_size > preprocess.short_side:
    raise ValueError(f"crop_size {crop_size} is larger than short_side "
                     f"{preprocess.short_side}")
  frames = video.iter_frames(path, preprocess.fps, preprocess.short_side,
                             preprocess.max_frames)
  # iter_frames yields at least one frame or raises.
  first = list(itertools.islice(frames, 2))
  [(top, left)] = video.crop_offsets(*first[0].shape[:2], crop_size)

  def crop(frame: np.ndarray) -> np.ndarray:
    return frame[top:top + crop_size, left:left + crop_size]

  frames = itertools.chain(first, frames)
  if "flow" not in streams:
    for frame in frames:
      yield {"rgb": video.rgb_to_model(crop(frame))}
    return
  if len(first) < 2:
    raise video.VideoError(
        path, video.too_short_for_flow_reason(len(first), preprocess.fps))
  # Flow t, the motion from frame t to t + 1, comes once frame t + 1 is read:
  # frames wait here for their flow.
  waiting: Deque[np.ndarray] = collections.deque()

  def remembered() -> Iterator[np.ndarray]:
    for frame in frames:
      waiting.append(frame)
      yield frame

  for flow_frame in flow.iter_flow(remembered(), preprocess.flow_algorithm):
    frame = waiting.popleft()
    inputs = {"flow": crop(flow_frame)}
    if "rgb" in streams:
      inputs["rgb"] = video.rgb_to_model(crop(frame))
    yield inputs


def classify_timeline(classifier: inference.Classifier,
                      path: str,
                      preprocess: video.PreprocessConfig,
                      crop_size: int,
                      window_s: float = 2.0,
                      stride_s: float = 1.0) -> List[Dict[str, Any]]:
  """Classifies a long video in sliding windows (see `evaluation.timeline`).

  The video is decoded once and streamed: memory holds one window of
  centre-cropped frames, whatever the video's length. Windows follow
  `evaluation.sliding_windows` at the preprocessing frame rate, so they cover
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
  window, stride = evaluation.window_frames(fps, window_s, stride_s)
  buffer: Deque[Dict[str, np.ndarray]] = collections.deque(maxlen=window)
  window_logits: Dict[Tuple[int, int], np.ndarray] = {}

  def classify_buffer() -> np.ndarray:
    clips = {s: np.stack([frame[s] for frame in buffer])[None]
             for s in classifier.streams}
    return classifier.logits(clips, any_length=True)[two_stream.JOINT][0]

  num_frames = 0
  for num_frames, inputs in enumerate(
      _model_frames(path, classifier.streams, preprocess, crop_size), 1):
    buffer.append(inputs)
    start = num_frames - window
    if start >= 0 and start % stride == 0:
      window_logits[(start, num_frames)] = classify_buffer()
  windows = evaluation.sliding_windows(num_frames, fps, window_s, stride_s)
  for start, end in windows:
    if (start, end) not in window_logits:
      # Only the last window can be left: aligned to the end of the video,
      # or the whole of a video shorter than a window. The buffer holds it.
      assert (end, end - start) == (num_frames, len(buffer)), (start, end)
      window_logits[(start, end)] = classify_buffer()
  probabilities = evaluation.softmax(np.stack([window_logits[w]
                                               for w in windows]))
  logging.info("%s: %d frames at %g fps, %d windows", path, num_frames, fps,
               len(windows))
  return evaluation.timeline(windows, probabilities, classifier.classes, fps)
