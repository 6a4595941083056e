"""Transfer learning of the two-stream I3D on a prepared dataset: the loop.

`Trainer` builds the model under a distribution strategy, starts from the
Kinetics weights or resumes (`i3d.train.checkpointer`), and loops over
`i3d.train.steps.make_train_step`, on clips or on cached frozen features
(`i3d.train.features`), logging and summarising as it goes.

A run's `train_dir` holds:
  config.json         the resolved TrainConfig and class list (`i3d.config`)
  ckpt/ckpt-N.*       object-based checkpoints (model, optimizer, step)
  features/           cached frozen-backbone outputs (fast path)
  export/             the exports of `i3d.export` (name-based and SavedModel)
  eval_metrics.json   the last evaluation, in evaluate.py's schema
  events.*            TensorBoard summaries
"""

import contextlib
import math
import os
import time
from typing import Any, Callable, Dict, Mapping, Optional

from absl import logging
import tensorflow as tf

from i3d import checkpoints
from i3d import config as config_lib
from i3d import precision
from i3d import streams as streams_lib
from i3d import two_stream
from i3d.train import checkpointer
from i3d.train import features
from i3d.train import steps


class Trainer:
  """Builds, restores, trains and evaluates a two-stream model."""

  def __init__(self, config: config_lib.TrainConfig,
               strategy: Optional[tf.distribute.Strategy] = None,
               checkpoints_dir: str = "checkpoints"):
    """Builds the model and optimizer, and restores the latest checkpoint.

    Args:
      config: the run's configuration; `config.classes` must be set.
      strategy: overrides `config.strategy` (tests).
      checkpoints_dir: where the Kinetics weights are looked for / fetched.

    Raises:
      TrainingError: if the configuration does not fit the data.
    """
    if not config.classes:
      raise checkpointer.TrainingError("TrainConfig.classes is empty")
    self.config = config
    self.strategy = strategy or steps.make_strategy(config.strategy)
    self.is_chief = checkpointer.is_chief(self.strategy)
    os.makedirs(config.train_dir, exist_ok=True)
    # Seeds the new logits' initial values (and dropout) for reproducible runs.
    tf.random.set_seed(config.seed)
    with self.strategy.scope(), steps.replicated_variables():
      self.model = two_stream.TwoStreamI3d(len(config.classes), config.streams)
      for stream, stream_model in self.model.streams.items():
        checkpoints.ensure_built(stream_model, streams_lib.CHANNELS[stream])
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
      self.learning_rate = tf.Variable(config.learning_rate, trainable=False,
                                       name="learning_rate")
      self.optimizer = steps.MomentumSGD(self.learning_rate, config.momentum)
      self.stages = {s: features.StreamStages(m, config.boundary)
                     for s, m in self.model.streams.items()}
      self.trainable_variables = [v for stage in self.stages.values()
                                  for v in stage.trainable_variables()]
      self.optimizer.initialize(self.trainable_variables)
    self.state = steps.TrainState(
        stages=self.stages, trainable_variables=self.trainable_variables,
        optimizer=self.optimizer, step=self.step,
        learning_rate=self.learning_rate)
    self.checkpointer = checkpointer.Checkpointer(
        tf.train.Checkpoint(model=self.model, optimizer=self.optimizer,
                            step=self.step),
        config.train_dir, config.keep_checkpoints, self.step,
        self.trainable_variables, self.is_chief)
    resumed = self.checkpointer.restore_latest()
    if resumed:
      logging.info("Resumed from %s at step %d", resumed,
                   int(self.step.numpy()))
    else:
      checkpointer.initialize_streams(self.model, config, checkpoints_dir)
    self._stop_requested = False

  def _step_precision(self) -> contextlib.AbstractContextManager:
    """Where training steps run: float16 on GPUs with mixed_precision.

    Grappler rewrites the step's graph to float16 on GPUs (numerically
    sensitive ops stay float32; the loss is scaled by steps.LOSS_SCALE), for
    the step's calls only: evaluation and exports in the same process are
    left alone.
    """
    if self.config.mixed_precision:
      return precision.grappler_options({"auto_mixed_precision": True})
    return contextlib.nullcontext()

  def request_stop(self) -> None:
    """Asks the loop to save and return after the current step (SIGTERM)."""
    self._stop_requested = True

  def train(self, evaluate_fn: Optional[Callable[[int], Dict[str, Any]]] = None
            ) -> Dict[str, Any]:
    """Trains to `num_steps`, evaluating and checkpointing on the way.

    Args:
      evaluate_fn: called with the step every `eval_every` steps before the
        last; returns metrics to log.

    Returns:
      {"step", "loss", "stopped_early"} of the last step run.

    Raises:
      TrainingError: if the loss becomes NaN or infinite; the last good
        checkpoint is kept.
    """
    config = self.config
    from_features = config.uses_feature_cache
    if from_features:
      cached = features.training_features(self.stages, config)
      data = tf.data.Dataset.from_tensor_slices(cached).shuffle(
          len(cached["label"]), seed=config.seed).repeat().batch(
              config.batch_size, drop_remainder=True).prefetch(2)
    else:
      data = features.clip_dataset(config, config.seed + int(self.step.numpy()))
    iterator = iter(self.strategy.experimental_distribute_dataset(data))
    train_step = steps.make_train_step(self.strategy, self.state, config,
                                      from_features)
    writer = (tf.summary.create_file_writer(config.train_dir)
              if self.is_chief else tf.summary.create_noop_writer())
    result = {"step": int(self.step.numpy()), "loss": None,
              "stopped_early": False}
    started, first_step = time.monotonic(), int(self.step.numpy())
    with writer.as_default(), checkpointer.sigterm_requests_stop(
        self.request_stop):
      while int(self.step.numpy()) < config.num_steps:
        with self._step_precision():
          outputs = train_step(iterator)
        step = int(self.step.numpy())
        loss = float(outputs["loss"])
        if not math.isfinite(loss):
          self.checkpointer.diverged(f"loss is {loss}")
        result.update(step=step, loss=loss)
        if step % config.log_every == 0 or step == config.num_steps:
          rate = (step - first_step) / (time.monotonic() - started)
          accuracy = {k.split("/", 1)[1]: float(v) / config.batch_size
                      for k, v in outputs.items() if k.startswith("correct/")}
          logging.info(
              "step %d/%d loss %.4f lr %.4g acc %s %.2f steps/s ETA %.0f s",
              step, config.num_steps, loss, float(self.learning_rate.numpy()),
              " ".join(f"{k}={v:.2f}" for k, v in accuracy.items()), rate,
              (config.num_steps - step) / max(rate, 1e-9))
          tf.summary.scalar("train/loss", loss, step=step)
          tf.summary.scalar("train/learning_rate", self.learning_rate,
                            step=step)
          for name, value in accuracy.items():
            tf.summary.scalar(f"train/accuracy_{name}", value, step=step)
        if step % config.checkpoint_every == 0:
          self.save()
        if self._stop_requested:
          logging.info("Stop requested at step %d: saving and exiting", step)
          self.save()
          result["stopped_early"] = True
          return result
        if evaluate_fn and step % config.eval_every == 0 and (
            step < config.num_steps):
          self.log_eval(evaluate_fn(step), step)
    self.save()
    return result

  def log_eval(self, metrics: Mapping[str, Any], step: int) -> None:
    """Logs and summarises evaluation metrics (`evaluate_streams`' dict)."""
    for name, stream_metrics in metrics.get("streams", {"": metrics}).items():
      suffix = f"_{name}" if name else ""
      tf.summary.scalar(f"eval/top1{suffix}", stream_metrics["top1"], step=step)
      tf.summary.scalar(f"eval/mean_class_accuracy{suffix}",
                        stream_metrics["mean_class_accuracy"], step=step)
    logging.info("eval at step %d: top-1 %.3f, mean class accuracy %.3f", step,
                 metrics["top1"], metrics["mean_class_accuracy"])

  def save(self) -> Optional[str]:
    """Writes a checkpoint (see `Checkpointer.save`); returns its prefix."""
    return self.checkpointer.save()
