"""Transfer learning of the two-stream I3D on a prepared dataset.

The training loop, its optimizer and schedule, distribution strategies,
checkpoints (resume, SIGTERM, NaN guard), summaries, and the frozen-backbone
fast path that trains on cached features.

A run's `train_dir` holds:
  config.json         the resolved TrainConfig and class list
  ckpt/ckpt-N.*       object-based checkpoints (model, optimizer, step)
  features/           cached frozen-backbone outputs (fast path)
  export/             the exports of `i3d.export` (name-based and SavedModel)
  eval_metrics.json   the last evaluation, in evaluate.py's schema
  events.*            TensorBoard summaries
"""

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import signal
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import sonnet as snt
import tensorflow as tf

from i3d import checkpoints
from i3d.data import cache as dataset
from i3d import fileio
from i3d import model as i3d_model
from i3d import two_stream

CONFIG_FILE = "config.json"
METRICS_FILE = "eval_metrics.json"
CHECKPOINT_SUBDIR = "ckpt"
FEATURES_SUBDIR = "features"

# --trainable: which endpoints train. The value names the last frozen
# endpoint; everything after it trains.
TRAINABLE_BOUNDARIES: Dict[str, Optional[str]] = {
    "logits": "Mixed_5c",
    "mixed_5": "MaxPool3d_5a_2x2",
    "mixed_4": "MaxPool3d_4a_3x3",
    "all": None,
}


class TrainingError(RuntimeError):
  """Training cannot go on (NaN loss, bad configuration)."""


@dataclasses.dataclass
class TrainConfig:
  """Everything a training run needs; saved as `train_dir/config.json`."""
  cache_dir: str
  train_dir: str
  classes: Tuple[str, ...] = ()
  stream: str = "joint"
  num_frames: int = 64
  crop_size: int = 224
  batch_size: int = 8
  trainable: str = "logits"
  batch_norm_training: bool = False
  learning_rate: float = 0.1
  lr_schedule: str = "cosine"
  warmup_steps: int = 0
  momentum: float = 0.9
  weight_decay: float = 1e-7
  dropout_keep_prob: float = 0.5
  label_smoothing: float = 0.0
  per_stream_loss_weight: float = 0.0
  num_steps: int = 1000
  eval_every: int = 500
  checkpoint_every: int = 200
  keep_checkpoints: int = 3
  log_every: int = 20
  seed: int = 0
  rgb_checkpoint: Optional[str] = None
  flow_checkpoint: Optional[str] = None
  feature_cache: bool = True
  feature_views: int = 8
  eval_num_frames: Optional[int] = None
  eval_num_clips: int = 1
  eval_num_crops: int = 1
  strategy: str = "default"
  mixed_precision: bool = False
  export: bool = True

  def __post_init__(self):
    if self.trainable not in TRAINABLE_BOUNDARIES:
      raise ValueError(f"trainable must be one of {list(TRAINABLE_BOUNDARIES)}"
                       f", got {self.trainable!r}")
    if self.lr_schedule not in ("cosine", "constant"):
      raise ValueError(f"lr_schedule must be cosine or constant, got "
                       f"{self.lr_schedule!r}")
    if self.strategy not in ("default", "mirrored", "multi_worker"):
      raise ValueError(f"strategy must be default, mirrored or multi_worker, "
                       f"got {self.strategy!r}")
    for name in ("num_frames", "crop_size", "batch_size", "num_steps",
                 "feature_views", "eval_num_clips"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    self.classes = tuple(self.classes)
    two_stream.parse_streams(self.stream)

  @property
  def streams(self) -> Tuple[str, ...]:
    return two_stream.parse_streams(self.stream)

  @property
  def boundary(self) -> Optional[str]:
    return TRAINABLE_BOUNDARIES[self.trainable]

  @property
  def uses_feature_cache(self) -> bool:
    """The fast path: with a frozen backbone part, train on its cached outputs.

    Each training video then contributes `feature_views` fixed augmented views
    instead of a new random view every step: far faster on small data, at the
    cost of augmentation variety. `feature_cache=False` turns it off.
    """
    return self.feature_cache and self.boundary is not None

  def to_json(self) -> Dict[str, Any]:
    value = dataclasses.asdict(self)
    value["classes"] = list(self.classes)
    return value


def save_config(config: TrainConfig) -> None:
  fileio.write_json(os.path.join(config.train_dir, CONFIG_FILE),
                    config.to_json())


def load_config(train_dir: str) -> TrainConfig:
  """Reads the configuration a training run saved.

  Raises:
    FileNotFoundError: if `train_dir` has no config.json.
  """
  path = os.path.join(train_dir, CONFIG_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{train_dir}: not a training directory (no "
                            f"{CONFIG_FILE})")
  with open(path, encoding="utf-8") as f:
    values = json.load(f)
  known = {f.name for f in dataclasses.fields(TrainConfig)}
  return TrainConfig(**{k: v for k, v in values.items() if k in known})


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


def load_trained_model(train_dir: str, checkpoint: Optional[str] = None
                       ) -> Tuple[two_stream.TwoStreamI3d, TrainConfig]:
  """Rebuilds a trained model for inference from its training directory.

  Args:
    train_dir: a train.py train_dir (its config.json gives classes, streams
      and clip settings).
    checkpoint: a checkpoint prefix in it (`.../ckpt/ckpt-N`); default the
      latest.

  Returns:
    (model with the checkpoint's weights, the run's TrainConfig).

  Raises:
    FileNotFoundError: if train_dir has no config or no checkpoint.
    TrainingError: if the checkpoint does not fit the configured model.
  """
  config = load_config(train_dir)
  path = checkpoint or latest_checkpoint(train_dir)
  model = two_stream.TwoStreamI3d(len(config.classes), config.streams)
  for stream, stream_model in model.streams.items():
    checkpoints.ensure_built(stream_model, two_stream.STREAM_CHANNELS[stream])
  try:
    status = tf.train.Checkpoint(model=model).restore(path)
    status.expect_partial().assert_existing_objects_matched()
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    raise TrainingError(
        f"{path}: does not fit the model of {train_dir}/{CONFIG_FILE} "
        f"({len(config.classes)} classes, streams {config.streams}): {e}"
    ) from e
  return model, config


# ----------------------------------------------------------------------------
# Distribution.


def make_strategy(name: str) -> tf.distribute.Strategy:
  """Returns the tf.distribute strategy for `--strategy`.

  Args:
    name: "default" (one device), "mirrored" (all local GPUs, or all logical
      CPUs when there is no GPU) or "multi_worker" (workers from TF_CONFIG).
  """
  if name == "mirrored":
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  return tf.distribute.get_strategy()


@contextlib.contextmanager
def replicated_variables() -> Iterator[None]:
  """Makes variables created inside updatable from replica context.

  Under a mirrored strategy a variable created without an aggregation cannot
  be assigned inside `strategy.run`. Gradients are all-reduced before the
  update, so every replica computes the same new value: taking the first
  replica's is exact and costs no extra reduction. Variables that set their
  own synchronization (batch-norm statistics) are left alone.
  """
  def creator(next_creator, **kwargs):
    if kwargs.get("synchronization", tf.VariableSynchronization.AUTO) in (
        tf.VariableSynchronization.AUTO, tf.VariableSynchronization.ON_WRITE):
      if kwargs.get("aggregation") in (None, tf.VariableAggregation.NONE):
        kwargs["aggregation"] = tf.VariableAggregation.ONLY_FIRST_REPLICA
    return next_creator(**kwargs)

  with tf.variable_creator_scope(creator):
    yield


class MomentumSGD(snt.Module):
  """SGD with momentum (the paper's optimizer), usable under any strategy.

  `accumulator <- momentum * accumulator + gradient;
   parameter <- parameter - learning_rate * accumulator`, as
  `snt.optimizers.Momentum`, which refuses tf.distribute's mirrored
  strategies. Call `apply` with gradients already all-reduced.
  """

  def __init__(self, learning_rate: tf.Variable, momentum: float = 0.9,
               name: str = "momentum_sgd"):
    super().__init__(name=name)
    self.learning_rate = learning_rate
    self.momentum = momentum
    self.accumulators: List[tf.Variable] = []

  def initialize(self, parameters: Sequence[tf.Variable]) -> None:
    """Creates the accumulators (before restoring a checkpoint into them)."""
    if not self.accumulators:
      with tf.init_scope():
        self.accumulators = [
            tf.Variable(tf.zeros(p.shape, p.dtype), trainable=False,
                        name="accumulator") for p in parameters]

  def apply(self, gradients: Sequence[tf.Tensor],
            parameters: Sequence[tf.Variable]) -> None:
    """Updates `parameters` with `gradients`."""
    self.initialize(parameters)
    for gradient, parameter, accumulator in zip(gradients, parameters,
                                                self.accumulators):
      accumulator.assign(self.momentum * accumulator + gradient)
      parameter.assign_sub(self.learning_rate * accumulator)


def learning_rate_at(config: TrainConfig, step: tf.Tensor) -> tf.Tensor:
  """Linear warm-up, then constant or cosine decay to 0 at num_steps."""
  step = tf.cast(step, tf.float32)
  base = tf.constant(config.learning_rate, tf.float32)
  warmup = float(max(config.warmup_steps, 0))
  if config.lr_schedule == "cosine":
    progress = tf.clip_by_value(
        (step - warmup) / max(config.num_steps - warmup, 1.0), 0.0, 1.0)
    rate = base * 0.5 * (1.0 + tf.cos(math.pi * progress))
  else:
    rate = base
  if warmup > 0:
    rate *= tf.minimum(1.0, (step + 1.0) / warmup)
  return rate


# ----------------------------------------------------------------------------
# Model stages: the frozen part (computed once per view on the fast path) and
# the trainable part.


class StreamStages:
  """Splits one stream's InceptionI3d at the last frozen endpoint."""

  def __init__(self, model: i3d_model.InceptionI3d, boundary: Optional[str]):
    """Constructs the split.

    Args:
      model: the stream's model.
      boundary: the last frozen endpoint ("Mixed_5c" freezes everything but
        the logits, whose input is then the pooled features); None trains all.
    """
    self.model = model
    self.boundary = boundary
    endpoints = i3d_model.VALID_ENDPOINTS[:i3d_model.VALID_ENDPOINTS.index(
        "Logits")]
    first = 0 if boundary is None else endpoints.index(boundary) + 1
    self.trainable_endpoints = tuple(endpoints[first:]) + ("Logits",)

  def frozen(self, clips: tf.Tensor) -> tf.Tensor:
    """The frozen part's output for [B, T, H, W, C] clips."""
    if self.boundary is None:
      return clips
    net = self.model.features(clips, is_training=False,
                              last_endpoint=self.boundary)
    if self.boundary == "Mixed_5c":
      net = self.model.pool(net)
    return tf.stop_gradient(net)

  def trainable(self, frozen: tf.Tensor, is_training: bool,
                batch_norm_training: bool,
                dropout_keep_prob: float) -> tf.Tensor:
    """Logits [B, K] from the frozen part's output."""
    net = frozen
    if self.trainable_endpoints[0] != "Logits":
      net = self.model.features(
          net, is_training=is_training and batch_norm_training,
          first_endpoint=self.trainable_endpoints[0])
      net = self.model.pool(net)
    return self.model.head(net, is_training=is_training,
                           dropout_keep_prob=dropout_keep_prob)

  def trainable_variables(self) -> List[tf.Variable]:
    return [v for endpoint in self.trainable_endpoints
            for v in self.model.endpoint_variables(endpoint) if v.trainable]


def initialize_streams(model: two_stream.TwoStreamI3d,
                       config: TrainConfig,
                       checkpoints_dir: str = "checkpoints") -> None:
  """Restores each stream's Kinetics weights, the logits left out.

  RGB comes from `config.rgb_checkpoint` (default: rgb_scratch, fetched if
  absent). Flow comes from `config.flow_checkpoint` if given, else by
  cross-modality initialisation from the RGB checkpoint.
  """
  rgb_checkpoint = config.rgb_checkpoint
  if "rgb" in model.streams or not config.flow_checkpoint:
    rgb_checkpoint = rgb_checkpoint or checkpoints.fetch_rgb_scratch(
        checkpoints_dir)
  for stream, stream_model in model.streams.items():
    if stream == "rgb":
      checkpoints.restore(stream_model, "rgb", rgb_checkpoint,
                          include_logits=False)
    elif config.flow_checkpoint:
      checkpoints.restore(stream_model, "flow", config.flow_checkpoint,
                          include_logits=False)
    else:
      checkpoints.init_flow_from_rgb(stream_model, rgb_checkpoint)


def weight_decay_loss(variables: Sequence[tf.Variable]) -> tf.Tensor:
  """Half the squared L2 norm of the convolution kernels among `variables`."""
  kernels = [v for v in variables if v.name.split(":")[0].endswith("/w")]
  if not kernels:
    return tf.constant(0.0)
  return tf.add_n([tf.nn.l2_loss(v) for v in kernels])


# ----------------------------------------------------------------------------
# The trainer.


class Trainer:
  """Builds, restores, trains and evaluates a two-stream model."""

  def __init__(self, config: TrainConfig,
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
      raise TrainingError("TrainConfig.classes is empty")
    self.config = config
    self.strategy = strategy or make_strategy(config.strategy)
    self.is_chief = _is_chief(self.strategy)
    os.makedirs(config.train_dir, exist_ok=True)
    # Seeds the new logits' initial values (and dropout) for reproducible runs.
    tf.random.set_seed(config.seed)
    if config.mixed_precision:
      # Grappler rewrites the compiled graphs to float16 on GPUs (numerically
      # sensitive ops stay float32); the loss is scaled by _LOSS_SCALE.
      tf.config.optimizer.set_experimental_options(
          {"auto_mixed_precision": True})
    with self.strategy.scope(), replicated_variables():
      self.model = two_stream.TwoStreamI3d(len(config.classes), config.streams)
      for stream, stream_model in self.model.streams.items():
        checkpoints.ensure_built(stream_model,
                                 two_stream.STREAM_CHANNELS[stream])
      self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
      self.learning_rate = tf.Variable(config.learning_rate, trainable=False,
                                       name="learning_rate")
      self.optimizer = MomentumSGD(self.learning_rate, config.momentum)
      self.stages = {s: StreamStages(m, config.boundary)
                     for s, m in self.model.streams.items()}
      self.trainable_variables = [v for stage in self.stages.values()
                                  for v in stage.trainable_variables()]
      self.optimizer.initialize(self.trainable_variables)
    self.checkpoint = tf.train.Checkpoint(model=self.model,
                                          optimizer=self.optimizer,
                                          step=self.step)
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, os.path.join(config.train_dir, CHECKPOINT_SUBDIR),
        max_to_keep=config.keep_checkpoints,
        step_counter=self.step)
    if self.manager.latest_checkpoint:
      self.checkpoint.restore(self.manager.latest_checkpoint).assert_existing_objects_matched()
      logging.info("Resumed from %s at step %d", self.manager.latest_checkpoint,
                   int(self.step.numpy()))
    else:
      initialize_streams(self.model, config, checkpoints_dir)
    self._train_step = None
    self._stop_requested = False

  # -- steps ------------------------------------------------------------------

  def _loss(self, stream_logits: Mapping[str, tf.Tensor], labels: tf.Tensor,
            global_batch_size: int) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    num_classes = len(self.config.classes)
    one_hot = tf.one_hot(labels, num_classes)
    if self.config.label_smoothing:
      one_hot = (one_hot * (1.0 - self.config.label_smoothing) +
                 self.config.label_smoothing / num_classes)
    logits = dict(stream_logits)
    logits[two_stream.JOINT] = tf.add_n(list(stream_logits.values()))

    def cross_entropy(x):
      return tf.nn.softmax_cross_entropy_with_logits(one_hot,
                                                     tf.cast(x, tf.float32))

    per_example = cross_entropy(logits[two_stream.JOINT])
    if self.config.per_stream_loss_weight and len(stream_logits) > 1:
      per_example += self.config.per_stream_loss_weight * tf.add_n(
          [cross_entropy(x) for x in stream_logits.values()])
    loss = tf.reduce_sum(per_example) / global_batch_size
    num_replicas = self.strategy.num_replicas_in_sync
    loss += (self.config.weight_decay *
             weight_decay_loss(self.trainable_variables) / num_replicas)
    correct = {name: tf.reduce_sum(tf.cast(tf.equal(
        tf.argmax(x, axis=-1, output_type=tf.int32), labels), tf.float32))
               for name, x in logits.items()}
    return loss, correct

  def _replica_step(self, inputs: Mapping[str, tf.Tensor],
                    from_features: bool) -> Dict[str, tf.Tensor]:
    config = self.config
    global_batch = config.batch_size
    with tf.GradientTape() as tape:
      stream_logits = {}
      for stream, stage in self.stages.items():
        frozen = inputs[stream] if from_features else stage.frozen(
            inputs[stream])
        stream_logits[stream] = stage.trainable(
            frozen, is_training=True,
            batch_norm_training=config.batch_norm_training,
            dropout_keep_prob=config.dropout_keep_prob)
      loss, correct = self._loss(stream_logits, inputs["label"], global_batch)
      scaled = loss * _LOSS_SCALE if config.mixed_precision else loss
    gradients = tape.gradient(scaled, self.trainable_variables)
    if config.mixed_precision:
      gradients = [g / _LOSS_SCALE for g in gradients]
    context = tf.distribute.get_replica_context()
    gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
    self.optimizer.apply(gradients, self.trainable_variables)
    return {"loss": loss, **{f"correct/{k}": v for k, v in correct.items()}}

  def _make_train_step(self, from_features: bool) -> Callable[..., Any]:
    @tf.function
    def train_step(iterator):
      self.learning_rate.assign(learning_rate_at(self.config, self.step))
      outputs = self.strategy.run(self._replica_step,
                                  args=(next(iterator), from_features))
      self.step.assign_add(1)
      return {k: self.strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
              for k, v in outputs.items()}
    return train_step

  def request_stop(self) -> None:
    """Asks the loop to save and return after the current step (SIGTERM)."""
    self._stop_requested = True

  # -- data -------------------------------------------------------------------

  def _clip_dataset(self, seed: int) -> tf.data.Dataset:
    return dataset.make_train_dataset(
        self.config.cache_dir, streams=self.config.streams,
        num_frames=self.config.num_frames, crop_size=self.config.crop_size,
        batch_size=self.config.batch_size, seed=seed)

  def frozen_features(self, batches: tf.data.Dataset,
                      num_batches: Optional[int] = None,
                      keep: Sequence[str] = ("label", "index")
                      ) -> Dict[str, np.ndarray]:
    """Runs the frozen part over batches and stacks the outputs."""
    frozen = tf.function(lambda x: {s: st.frozen(x[s])
                                    for s, st in self.stages.items()})
    outputs: Dict[str, List[np.ndarray]] = {}
    started = time.monotonic()
    for i, batch in enumerate(batches.take(num_batches or -1)):
      for key, value in frozen(batch).items():
        outputs.setdefault(key, []).append(value.numpy())
      for key in keep:
        outputs.setdefault(key, []).append(batch[key].numpy())
      if num_batches and (i + 1) % 10 == 0:
        elapsed = time.monotonic() - started
        logging.info("Features: %d/%d batches, ETA %.0f s", i + 1, num_batches,
                     elapsed / (i + 1) * (num_batches - i - 1))
    return {k: np.concatenate(v) for k, v in outputs.items()}

  def training_features(self) -> Dict[str, np.ndarray]:
    """Cached frozen outputs of `feature_views` augmented views per video."""
    config = self.config
    entries = dataset.read_cache(config.cache_dir).split_entries("train")
    num_videos = len(entries)
    num_batches = math.ceil(num_videos * config.feature_views /
                            config.batch_size)
    key = _fingerprint({"config": {k: v for k, v in config.to_json().items()
                                   if k in _FEATURE_KEYS},
                        "videos": [(e.path, e.key) for e in entries]})
    path = os.path.join(config.train_dir, FEATURES_SUBDIR, f"train-{key}.npz")
    if os.path.exists(path):
      with np.load(path) as cached:
        return dict(cached)
    logging.info("Computing frozen features: %d views of %d videos",
                 config.feature_views, num_videos)
    features = self.frozen_features(self._clip_dataset(config.seed),
                                    num_batches)
    with fileio.atomic_path(path) as tmp:
      with open(tmp, "wb") as f:
        np.savez(f, **features)
    return features

  # -- loop -------------------------------------------------------------------

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
      features = self.training_features()
      data = tf.data.Dataset.from_tensor_slices(features).shuffle(
          len(features["label"]), seed=config.seed).repeat().batch(
              config.batch_size, drop_remainder=True).prefetch(2)
    else:
      data = self._clip_dataset(config.seed + int(self.step.numpy()))
    iterator = iter(self.strategy.experimental_distribute_dataset(data))
    train_step = self._make_train_step(from_features)
    writer = (tf.summary.create_file_writer(config.train_dir)
              if self.is_chief else tf.summary.create_noop_writer())
    result = {"step": int(self.step.numpy()), "loss": None,
              "stopped_early": False}
    started, first_step = time.monotonic(), int(self.step.numpy())
    with writer.as_default(), _sigterm_requests_stop(self):
      while int(self.step.numpy()) < config.num_steps:
        outputs = train_step(iterator)
        step = int(self.step.numpy())
        loss = float(outputs["loss"])
        if not math.isfinite(loss):
          self._diverged(f"loss is {loss}")
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
    for name, stream_metrics in metrics.get("streams", {"": metrics}).items():
      suffix = f"_{name}" if name else ""
      tf.summary.scalar(f"eval/top1{suffix}", stream_metrics["top1"], step=step)
      tf.summary.scalar(f"eval/mean_class_accuracy{suffix}",
                        stream_metrics["mean_class_accuracy"], step=step)
    logging.info("eval at step %d: top-1 %.3f, mean class accuracy %.3f", step,
                 metrics["top1"], metrics["mean_class_accuracy"])

  def _diverged(self, problem: str) -> None:
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
    if not all(np.isfinite(v.numpy()).all() for v in self.trainable_variables):
      self._diverged("trainable variables are not finite")
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
      return self.config.train_dir
    return os.path.join(self.config.train_dir, "worker_tmp", str(_task_id()))


# Loss scale for float16 mixed precision: keeps small gradients representable.
_LOSS_SCALE = 128.0

# TrainConfig fields that change the cached training features.
_FEATURE_KEYS = ("cache_dir", "stream", "num_frames", "crop_size", "batch_size",
                 "seed", "feature_views", "rgb_checkpoint", "flow_checkpoint",
                 "classes", "trainable")


def _fingerprint(value: Any) -> str:
  text = json.dumps(value, sort_keys=True)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _task_id() -> int:
  tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
  return int(tf_config.get("task", {}).get("index", 0))


def _is_chief(strategy: tf.distribute.Strategy) -> bool:
  if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return True
  resolver = strategy.cluster_resolver
  return (resolver.task_type in (None, "chief") or
          (resolver.task_type == "worker" and resolver.task_id == 0 and
           "chief" not in resolver.cluster_spec().as_dict()))


@contextlib.contextmanager
def _sigterm_requests_stop(trainer: Trainer) -> Iterator[None]:
  """While training, SIGTERM makes the loop save and return cleanly."""
  def handler(signum, frame):
    del signum, frame  # Unused.
    logging.warning("SIGTERM received: will save and stop after this step")
    trainer.request_stop()

  try:
    previous = signal.signal(signal.SIGTERM, handler)
  except ValueError:  # Not the main thread: leave signals alone.
    yield
    return
  try:
    yield
  finally:
    signal.signal(signal.SIGTERM, previous)
