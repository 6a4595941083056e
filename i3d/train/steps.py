"""The training step: loss, optimizer, learning-rate schedule, distribution.

Public and usable on their own (tests, benchmarks): `loss`, `replica_step`
(one replica's forward, backward and update) and `make_train_step` (the
compiled step over a `tf.distribute` strategy), over a `TrainState`.
"""

import contextlib
import dataclasses
import math
from typing import Callable, Dict, Iterator, List, Mapping, Sequence, Tuple

import sonnet as snt
import tensorflow as tf

from i3d import config as config_lib
from i3d import streams as streams_lib
from i3d import two_stream
from i3d.train import features

# Loss scale for float16 mixed precision: keeps small gradients representable.
LOSS_SCALE = 128.0


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


def learning_rate_at(config: config_lib.TrainConfig,
                     step: tf.Tensor) -> tf.Tensor:
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


def weight_decay_loss(variables: Sequence[tf.Variable]) -> tf.Tensor:
  """Half the squared L2 norm of the convolution kernels among `variables`."""
  kernels = [v for v in variables if v.name.split(":")[0].endswith("/w")]
  if not kernels:
    return tf.constant(0.0)
  return tf.add_n([tf.nn.l2_loss(v) for v in kernels])


@dataclasses.dataclass(frozen=True)
class TrainState:
  """The modules and variables a train step reads and updates.

  Attributes:
    stages: stream -> its split into a frozen and a trainable part.
    trainable_variables: the variables the optimizer updates.
    optimizer: the optimizer.
    step: the int64 step counter; each train step adds one.
    learning_rate: the float32 rate, set from the schedule before each step.
  """
  stages: Dict[str, features.StreamStages]
  trainable_variables: List[tf.Variable]
  optimizer: MomentumSGD
  step: tf.Variable
  learning_rate: tf.Variable


def loss(stream_logits: Mapping[str, tf.Tensor], labels: tf.Tensor,
         config: config_lib.TrainConfig,
         trainable_variables: Sequence[tf.Variable], global_batch_size: int,
         num_replicas: int = 1) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
  """One replica's training loss, and its correct top-1 predictions.

  The softmax cross-entropy of the joint (summed) logits, plus
  `config.per_stream_loss_weight` times each stream's own with two streams,
  with `config.label_smoothing`; summed over the replica's examples and
  divided by the global batch size, so that summing the replicas' gradients
  gives the gradient of the global mean. Plus `config.weight_decay` times the
  kernels' half squared L2 norm (`weight_decay_loss`), split among replicas.

  Args:
    stream_logits: stream -> [B, K] logits (float32, or float16 under mixed
      precision).
    labels: int32 [B] class indices.
    config: the run's settings (classes, smoothing, weights).
    trainable_variables: the variables under weight decay.
    global_batch_size: examples per step over all replicas.
    num_replicas: replicas in sync.

  Returns:
    (the scalar float32 loss, {name: float32 count of correct top-1
    predictions} for each stream and "joint").
  """
  num_classes = len(config.classes)
  one_hot = tf.one_hot(labels, num_classes)
  if config.label_smoothing:
    one_hot = (one_hot * (1.0 - config.label_smoothing) +
               config.label_smoothing / num_classes)
  logits = dict(stream_logits)
  logits[streams_lib.JOINT] = two_stream.joint_logits(stream_logits)

  def cross_entropy(x):
    return tf.nn.softmax_cross_entropy_with_logits(one_hot,
                                                   tf.cast(x, tf.float32))

  per_example = cross_entropy(logits[streams_lib.JOINT])
  if config.per_stream_loss_weight and len(stream_logits) > 1:
    per_example += config.per_stream_loss_weight * tf.add_n(
        [cross_entropy(x) for x in stream_logits.values()])
  total = tf.reduce_sum(per_example) / global_batch_size
  total += (config.weight_decay *
            weight_decay_loss(trainable_variables) / num_replicas)
  correct = {name: tf.reduce_sum(tf.cast(tf.equal(
      tf.argmax(x, axis=-1, output_type=tf.int32), labels), tf.float32))
             for name, x in logits.items()}
  return total, correct


def replica_step(state: TrainState, config: config_lib.TrainConfig,
                 inputs: Mapping[str, tf.Tensor],
                 from_features: bool) -> Dict[str, tf.Tensor]:
  """One replica's forward pass, gradients (all-reduced) and update.

  Call it in replica context (`strategy.run`); `make_train_step` does.

  Args:
    state: the model's stages, variables and optimizer.
    config: the run's settings.
    inputs: {stream: [B, T, H, W, C] clips in [-1, 1], or the frozen part's
      outputs when `from_features`; "label": int32 [B]}.
    from_features: the inputs are frozen features (the fast path).

  Returns:
    {"loss": scalar, "correct/<stream or joint>": correct counts}.
  """
  global_batch = config.batch_size
  with tf.GradientTape() as tape:
    stream_logits = {}
    for stream, stage in state.stages.items():
      frozen = inputs[stream] if from_features else stage.frozen(
          inputs[stream])
      stream_logits[stream] = stage.trainable(
          frozen, is_training=True,
          batch_norm_training=config.batch_norm_training,
          dropout_keep_prob=config.dropout_keep_prob)
    context = tf.distribute.get_replica_context()
    value, correct = loss(stream_logits, inputs["label"], config,
                          state.trainable_variables, global_batch,
                          context.num_replicas_in_sync)
    scaled = value * LOSS_SCALE if config.mixed_precision else value
  gradients = tape.gradient(scaled, state.trainable_variables)
  if config.mixed_precision:
    gradients = [g / LOSS_SCALE for g in gradients]
  gradients = context.all_reduce(tf.distribute.ReduceOp.SUM, gradients)
  state.optimizer.apply(gradients, state.trainable_variables)
  return {"loss": value, **{f"correct/{k}": v for k, v in correct.items()}}


def make_train_step(strategy: tf.distribute.Strategy, state: TrainState,
                    config: config_lib.TrainConfig,
                    from_features: bool) -> Callable[..., Dict[str, tf.Tensor]]:
  """Returns the compiled train step: schedule, `replica_step`, step + 1.

  Args:
    strategy: the strategy whose scope holds the state's variables.
    state: the model's stages, variables and optimizer.
    config: the run's settings (read when the step is traced).
    from_features: the batches are frozen features (the fast path).

  Returns:
    A `tf.function` taking a distributed iterator and returning the step's
    {"loss", "correct/..."} summed over replicas.
  """
  @tf.function
  def train_step(iterator):
    state.learning_rate.assign(learning_rate_at(config, state.step))
    outputs = strategy.run(
        lambda batch: replica_step(state, config, batch, from_features),
        args=(next(iterator),))
    state.step.assign_add(1)
    return {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
            for k, v in outputs.items()}
  return train_step
