"""A run trained by train.py, loaded with its settings, ready to classify.

A training run's `train_dir` gives everything needed to run its model the way
it was trained: the class list, the streams, the crop and evaluation clip
settings and the preprocessing settings (frame rate, frame size, optical flow
algorithm) it was trained with (config.json, `i3d.config`), and the weights
(ckpt/). `load_run` loads it; `with_views` changes its
evaluation views.
"""

import dataclasses
import os
import re
from typing import Dict, List, Optional, Sequence, Tuple

from absl import logging
import tensorflow as tf

from i3d import checkpoints
from i3d import config as config_lib
from i3d import precision
from i3d import streams as streams_lib
from i3d import two_stream
from i3d.data import cache
from i3d.data import sources
from i3d.eval import classify
from i3d.train import checkpointer
from i3d.video import preprocess

# Object-based checkpoint keys of a train.py run's logits biases:
# model/streams/<stream>/logits/conv/b, of shape [num_classes].
_LOGITS_BIAS_KEY = re.compile(
    r"^model/streams/(\w+)/logits/conv/b/\.ATTRIBUTES/VARIABLE_VALUE$")


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
  classifier: classify.Classifier
  config: config_lib.TrainConfig
  checkpoint: str
  preprocess: preprocess.PreprocessConfig

  @property
  def classes(self) -> List[str]:
    return list(self.config.classes)

  @property
  def streams(self) -> Tuple[str, ...]:
    return self.config.streams


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
                           config: config_lib.TrainConfig) -> None:
  """Explains, in the user's terms, a checkpoint that does not fit a run."""
  logits = _checkpoint_logits(path)
  config_file = os.path.join(train_dir, config_lib.CONFIG_FILE)
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


def run_preprocess_config(config: config_lib.TrainConfig,
                          train_dir: str) -> preprocess.PreprocessConfig:
  """The preprocessing settings a run's model was trained with.

  They are saved in the run's config.json. A run saved before they were has
  them only in its training cache's metadata: they are read from there, with
  a warning that says so, and never guessed.

  Args:
    config: the run's configuration.
    train_dir: the run's directory (for messages).

  Returns:
    The settings (fps, short_side, flow_algorithm, max_frames).

  Raises:
    ModelError: if config.json has no preprocessing and the training cache
      cannot be read.
  """
  if config.preprocess is not None:
    return config.preprocess
  try:
    settings = cache.read_cache(config.cache_dir).config
  except (sources.DatasetError, OSError, KeyError, TypeError) as e:
    raise ModelError(
        f"{train_dir}/{config_lib.CONFIG_FILE} predates saved "
        "preprocessing settings and its training cache cannot be read "
        f"({e}): put the cache back at {config.cache_dir}, or add the "
        "cache's settings as \"preprocess\": {\"fps\", \"short_side\", "
        "\"flow_algorithm\", \"max_frames\"} to the config.json") from e
  logging.warning(
      "%s/%s predates saved preprocessing settings; using those of its "
      "training cache %s: %s", train_dir, config_lib.CONFIG_FILE,
      config.cache_dir, settings)
  return settings


def load_trained_model(train_dir: str, checkpoint: Optional[str] = None
                       ) -> Tuple[two_stream.TwoStreamI3d,
                                  config_lib.TrainConfig]:
  """Rebuilds a trained model for inference from its training directory.

  Args:
    train_dir: a train.py train_dir (its config.json gives classes, streams
      and clip settings).
    checkpoint: a checkpoint of it: its prefix (`.../ckpt/ckpt-N`), one of
      its files or its directory (see `checkpoints.checkpoint_prefix`);
      default the latest.

  Returns:
    (model with the checkpoint's weights, the run's TrainConfig).

  Raises:
    FileNotFoundError: if train_dir has no config or no checkpoint.
    CheckpointError: if `checkpoint` names no checkpoint.
    TrainingError: if the checkpoint does not fit the configured model.
  """
  config = config_lib.load_config(train_dir)
  path = (checkpoints.checkpoint_prefix(checkpoint) if checkpoint else
          checkpointer.latest_checkpoint(train_dir))
  model = two_stream.TwoStreamI3d(len(config.classes), config.streams)
  for stream, stream_model in model.streams.items():
    checkpoints.ensure_built(stream_model, streams_lib.CHANNELS[stream])
  try:
    status = tf.train.Checkpoint(model=model).restore(path)
    status.expect_partial().assert_existing_objects_matched()
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    raise checkpointer.TrainingError(
        f"{path}: does not fit the model of "
        f"{train_dir}/{config_lib.CONFIG_FILE} "
        f"({len(config.classes)} classes, streams {config.streams}): {e}"
    ) from e
  return model, config


def load_run(train_dir: str,
             checkpoint: Optional[str] = None,
             classes: Optional[Sequence[str]] = None,
             inference_bfloat16: Optional[str] = None) -> TrainedModel:
  """Loads a train.py run's model for evaluation or prediction.

  Args:
    train_dir: the run's directory (config.json, ckpt/).
    checkpoint: a checkpoint prefix (`train_dir/ckpt/ckpt-N`) or a directory
      holding checkpoints; default the run's latest.
    classes: if given, the class list the caller expects: it must equal the
      run's (same names, same order).
    inference_bfloat16: "auto", "on" or "off" (see `i3d.precision`); None
      keeps the run's setting.

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
  parent = os.path.dirname(os.path.normpath(train_dir))
  if (not os.path.exists(os.path.join(train_dir, config_lib.CONFIG_FILE)) and
      os.path.exists(os.path.join(parent, config_lib.CONFIG_FILE))):
    raise ModelError(f"{train_dir} is inside the run {parent or '.'}: pass "
                     f"the run's directory, --checkpoint_dir={parent or '.'}")
  try:
    path = (checkpoints.checkpoint_prefix(checkpoint) if checkpoint else
            checkpointer.latest_checkpoint(train_dir))
  except (FileNotFoundError, checkpoints.CheckpointError) as e:
    advice = ("; leave out --checkpoint for the run's latest"
              if checkpoint else
              "; train a model into it with train.py, or pass --checkpoint")
    raise ModelError(f"{e}{advice}") from e
  try:
    config = config_lib.load_config(train_dir)
  except (FileNotFoundError, ValueError) as e:
    raise ModelError(str(e)) from e
  if classes is not None:
    _check_classes(config.classes, classes, train_dir)
  settings = run_preprocess_config(config, train_dir)
  _check_checkpoint_fits(path, train_dir, config)
  try:
    model, config = load_trained_model(train_dir, path)
  except (FileNotFoundError, checkpointer.TrainingError) as e:
    # TensorFlow's explanation can run over many lines; the first says it.
    raise ModelError(str(e).splitlines()[0]) from e
  config = dataclasses.replace(config, preprocess=settings)
  if inference_bfloat16 is not None:
    config = dataclasses.replace(config, inference_bfloat16=inference_bfloat16)
  bfloat16 = precision.use_inference_bfloat16(config.inference_bfloat16)
  logging.info("Loaded %s (%s, %d classes, %s inference)", path,
               "+".join(config.streams), len(config.classes),
               "bfloat16" if bfloat16 else "float32")
  return TrainedModel(classifier=classify.Classifier(model, config.classes,
                                                     bfloat16),
                      config=config, checkpoint=path,
                      preprocess=config.preprocess)


def with_views(config: config_lib.TrainConfig,
               num_frames: Optional[int] = None,
               num_clips: Optional[int] = None,
               num_crops: Optional[int] = None,
               whole_video: bool = False) -> config_lib.TrainConfig:
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
    ValueError: for impossible views (out of the settings' ranges, several
      clips of the whole video).
  """
  if whole_video and num_frames is not None:
    raise ValueError("give a clip length or the whole video, not both")
  frames = None if whole_video else (
      config.eval_num_frames if num_frames is None else num_frames)
  clips = config.eval_num_clips if num_clips is None else num_clips
  crops = config.eval_num_crops if num_crops is None else num_crops
  # TrainConfig checks the values against their settings.
  return dataclasses.replace(config, eval_num_frames=frames,
                             eval_num_clips=clips, eval_num_crops=crops)


def describe_views(config: config_lib.TrainConfig) -> str:
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
