"""Saving and resuming a run: checkpoints, the NaN guard, SIGTERM, workers.

A run starts from the Kinetics weights or a previous run's
(`initialize_streams`) or resumes from
its latest checkpoint in `train_dir/ckpt/` (`Checkpointer`); SIGTERM asks the
loop to save and return (`sigterm_requests_stop`); non-finite weights are
never saved.
"""

import contextlib
import json
import math
import os
import signal
from typing import Callable, Iterator, NoReturn, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from i3d import checkpoints
from i3d import config as config_lib
from i3d import export
from i3d import kinetics_weights
from i3d import two_stream
from i3d.data import cache
from i3d.data import pipeline
from i3d.train import batch_norm

CHECKPOINT_SUBDIR = "ckpt"


class TrainingError(RuntimeError):
  """Training cannot go on (NaN loss, bad configuration)."""


def check_training_data(config: config_lib.TrainConfig) -> None:
  """Refuses a rerun whose training videos differ from its saved run's.

  Resuming would go on from (or, at the last step, only evaluate) a model
  trained on other data, e.g. after the demo data was regenerated. Runs saved
  before `TrainConfig.training_data` existed are not checked.

  Args:
    config: the rerun's settings, with `training_data` from its cache.

  Raises:
    TrainingError: naming the run directory and what to do.
  """
  if not os.path.exists(os.path.join(config.train_dir,
                                     config_lib.CONFIG_FILE)):
    return
  saved = config_lib.load_config(config.train_dir).training_data
  if saved and saved != config.training_data:
    raise TrainingError(
        f"{config.train_dir} holds a run trained on other videos than "
        f"{config.cache_dir}'s training split now has; use a new --train_dir, "
        "or delete it to train again")


def latest_checkpoint(train_dir: str) -> str:
  """Returns the newest training checkpoint of a train_dir.

  Raises:
    FileNotFoundError: if there is none.
  """
  path = tf.train.latest_checkpoint(os.path.join(train_dir, CHECKPOINT_SUBDIR))
  if not path:
    raise FileNotFoundError(f"{train_dir}: no checkpoint in "
                            f"{os.path.join(train_dir, CHECKPOINT_SUBDIR)}")
  return path


def restore_run(model: two_stream.TwoStreamI3d,
                train_dir: str,
                classes: Sequence[str]) -> tuple[str, ...]:
  """Starts the streams a previous run has from its latest checkpoint.

  Every variable is restored; the logits only when the run's class list is
  `classes` (same names, same order), else they keep their new values. This
  is how a model trained on synthetic data goes on to a user's own videos.

  Args:
    model: the new model.
    train_dir: the previous run's train_dir (config.json, ckpt/).
    classes: the new model's classes, in logit order.

  Returns:
    The streams restored, in `model.streams` order.

  Raises:
    TrainingError: if the run cannot be read or does not fit the model.
  """
  # Imported here: i3d.eval.runs imports this module.
  from i3d.eval import runs  # pylint: disable=g-import-not-at-top
  try:
    previous, previous_config = runs.load_trained_model(train_dir)
    tensors = export.model_tensors(previous)
    include_logits = tuple(previous_config.classes) == tuple(classes)
    restored = tuple(s for s in model.streams if s in previous.streams)
    for stream in restored:
      checkpoints.restore_tensors(model.streams[stream], stream, tensors,
                                  include_logits=include_logits,
                                  source=f"{train_dir} ({stream})")
  except (FileNotFoundError, ValueError, checkpoints.CheckpointError) as e:
    raise TrainingError(f"cannot start from the run {train_dir}: {e}") from e
  logging.info("Started %s from the run %s%s", ", ".join(restored) or
               "no stream", train_dir, "" if include_logits else
               " (new logits: other classes)")
  return restored


def initialize_streams(model: two_stream.TwoStreamI3d,
                       config: config_lib.TrainConfig,
                       checkpoints_dir: str = "checkpoints") -> None:
  """Restores each stream's starting weights.

  With `config.init_from`, the streams that run has start from it
  (`restore_run`). The others start from Kinetics, the logits left out: RGB
  from `config.rgb_checkpoint` (default: rgb_scratch, fetched if absent),
  flow from `config.flow_checkpoint` if given (statistics included), else by
  cross-modality initialisation from the RGB checkpoint; its batch-norm
  statistics are then re-estimated on the clips of
  `config.flow_batch_norm_batches` training batches, since the RGB ones do
  not describe flow activations (`i3d.train.batch_norm`).
  """
  from_run = (restore_run(model, config.init_from, config.classes)
              if config.init_from else ())
  remaining = [s for s in model.streams if s not in from_run]
  if not remaining:
    return
  rgb_checkpoint = config.rgb_checkpoint
  if "rgb" in remaining or not config.flow_checkpoint:
    rgb_checkpoint = rgb_checkpoint or kinetics_weights.fetch_rgb_scratch(
        checkpoints_dir)
  for stream in remaining:
    stream_model = model.streams[stream]
    if stream == "rgb":
      checkpoints.restore(stream_model, "rgb", rgb_checkpoint,
                          include_logits=False)
    elif config.flow_checkpoint:
      checkpoints.restore(stream_model, "flow", config.flow_checkpoint,
                          include_logits=False)
    else:
      checkpoints.init_flow_from_rgb(stream_model, rgb_checkpoint)
      if config.flow_batch_norm_batches:
        # The clips of flow_batch_norm_batches training batches, in batches
        # of at least batch_norm.MIN_BATCH_SIZE; enough finite passes for
        # them, since cutting an endless pipeline with take() stalls while
        # its clips in flight are cancelled.
        num_clips = config.flow_batch_norm_batches * config.batch_size
        batch_size = max(config.batch_size, batch_norm.MIN_BATCH_SIZE)
        num_batches = math.ceil(num_clips / batch_size)
        num_videos = len(cache.read_cache(config.cache_dir).split_entries(
            "train"))
        passes = math.ceil(num_batches * batch_size / max(num_videos, 1))
        clips = pipeline.make_train_dataset(
            config.cache_dir, streams=("flow",), num_frames=config.num_frames,
            crop_size=config.crop_size, batch_size=batch_size,
            seed=config.seed, repeat=passes).take(num_batches)
        batch_norm.reestimate_statistics(
            stream_model, "flow", (batch["flow"] for batch in clips))


def task_id() -> int:
  """This worker's index in TF_CONFIG (0 without one)."""
  tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
  return int(tf_config.get("task", {}).get("index", 0))


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this worker's checkpoints, exports and summaries are kept."""
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return True
  resolver = strategy.cluster_resolver
  return (resolver.task_type in (None, "chief") or
          (resolver.task_type == "worker" and resolver.task_id == 0 and
           "chief" not in resolver.cluster_spec().as_dict()))


class Checkpointer:
  """Saves and resumes a run's model, optimizer and step in `train_dir/ckpt/`.

  Keeps the latest `keep` checkpoints and refuses to save non-finite weights
  (the NaN guard). Under a multi-worker strategy every worker saves (reading
  batch-norm statistics is a collective op) but only the chief's copy is kept.
  """

  def __init__(self, checkpoint: tf.train.Checkpoint, train_dir: str,
               keep: int, step: tf.Variable,
               guarded_variables: Sequence[tf.Variable], is_chief: bool):
    """Sets up the checkpoint directory.

    Args:
      checkpoint: what to save (model, optimizer, step).
      train_dir: the run's directory.
      keep: how many checkpoints to keep.
      step: the step counter, numbering the checkpoints.
      guarded_variables: variables that must be finite to save (the
        trainable ones).
      is_chief: whether this worker's files are kept.
    """
    self.checkpoint = checkpoint
    self.train_dir = train_dir
    self.step = step
    self.guarded_variables = list(guarded_variables)
    self.is_chief = is_chief
    self.manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(train_dir, CHECKPOINT_SUBDIR),
        max_to_keep=keep, step_counter=step)

  def restore_latest(self) -> Optional[str]:
    """Restores the latest checkpoint, if any; returns its prefix or None."""
    latest = self.manager.latest_checkpoint
    if latest:
      self.checkpoint.restore(latest).assert_existing_objects_matched()
    return latest

  def diverged(self, problem: str) -> NoReturn:
    """Stops training: raises TrainingError naming the last good checkpoint."""
    raise TrainingError(
        f"Training diverged at step {int(self.step.numpy())}: {problem}; "
        f"stopped. The last good checkpoint is "
        f"{self.manager.latest_checkpoint} (try a lower --learning_rate)")

  def save(self) -> Optional[str]:
    """Writes a checkpoint (all workers take part; the chief's is kept).

    Raises:
      TrainingError: if a trainable variable is NaN or infinite (the loss
        of a step is computed before its update, so it can still be finite);
        nothing is saved.
    """
    if int(self.step.numpy()) == 0:
      return None
    if not all(np.isfinite(v.numpy()).all() for v in self.guarded_variables):
      self.diverged("trainable variables are not finite")
    if self.manager.latest_checkpoint and self.manager.latest_checkpoint.endswith(
        f"-{int(self.step.numpy())}"):
      return self.manager.latest_checkpoint
    if self.is_chief:
      return self.manager.save(checkpoint_number=self.step)
    # Non-chief workers write to a scratch directory: every worker must join
    # the save's collective ops, but only the chief's copy is kept.
    scratch = tf.train.CheckpointManager(
        self.checkpoint, os.path.join(self.worker_dir, CHECKPOINT_SUBDIR),
        max_to_keep=1)
    return scratch.save(checkpoint_number=self.step)

  @property
  def worker_dir(self) -> str:
    """Where this worker writes: train_dir for the chief, else a scratch dir.

    Reading batch-norm statistics (ON_READ variables) under a multi-worker
    strategy is a collective op, so every worker takes part in saves and
    exports; only the chief's files are kept.
    """
    if self.is_chief:
      return self.train_dir
    return os.path.join(self.train_dir, "worker_tmp", str(task_id()))


@contextlib.contextmanager
def sigterm_requests_stop(request_stop: Callable[[], None]) -> Iterator[None]:
  """While in this context, SIGTERM calls `request_stop` (save and return)."""
  def handler(signum, frame):
    del signum, frame  # Unused.
    logging.warning("SIGTERM received: will save and stop after this step")
    request_stop()

  try:
    previous = signal.signal(signal.SIGTERM, handler)
  except ValueError:  # Not the main thread: leave signals alone.
    yield
    return
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)
