"""Re-estimating a stream's batch-norm statistics on its own inputs (AdaBN).

A flow stream initialised from RGB weights (cross-modality init, see
`i3d.checkpoints.init_flow_from_rgb`) inherits the RGB checkpoint's batch-norm
moving statistics, which describe the activations of RGB frames in [-1, 1].
Flow is small (1 px of motion is 0.05 after the /20 scaling), so the first
convolution's outputs are a small fraction of what its statistics expect, and
every normalised activation sits near the same value: the frozen trunk maps
different motion to nearly the same features (issue 10).

Re-estimating the statistics on the new modality's training clips fixes this:
Temporal Segment Networks (Wang et al., 2016, "cross-modality pre-training"
with partial batch norm) and AdaBN (Li et al., 2016, "Revisiting Batch
Normalization For Practical Domain Adaptation") do the same. The trunk runs in
training mode (batch statistics) over a few batches and each batch norm's
`moving_mean` / `moving_variance` become the population mean and variance of
its inputs over all of them.

Batches must not be small: in training mode each layer normalises its inputs
with the batch's own statistics, so the deeper layers' statistics describe
inputs normalised per batch, not by the population statistics they will see.
With batches of 2 clips the features of other clips blew up to 1e3-1e5
(tests/test_train_loop.py's tiny clips); `MIN_BATCH_SIZE` clips per batch
keep them at the RGB stream's scale.
"""

from typing import Dict, Iterable, List

from absl import logging
import numpy as np
import tensorflow as tf

from i3d import checkpoints
from i3d import model as i3d_model

# The fewest clips per batch to estimate statistics on (see the docstring).
MIN_BATCH_SIZE = 16


def batch_norms(model: i3d_model.InceptionI3d) -> List[i3d_model.BatchNorm]:
  """The model's batch-norm modules, in a fixed order."""
  return [m for m in model.submodules if isinstance(m, i3d_model.BatchNorm)]


def estimate_statistics(model: i3d_model.InceptionI3d, stream: str,
                        clips: Iterable[tf.Tensor]) -> Dict[str, np.ndarray]:
  """Population statistics of each batch norm's inputs over `clips`.

  Runs a copy of the model (so `model` and its distribution strategy are left
  alone) in training mode over the batches, reads each batch norm's batch
  mean and variance, and combines them into the mean and (biased) variance
  over every position of every clip: mean = E[x], variance = E[x^2] - E[x]^2,
  each batch weighted by its number of clips.

  Args:
    model: a built stream model.
    stream: "rgb" or "flow".
    clips: batches of [B, T, H, W, C] clips as the stream sees them in
      training (values in [-1, 1]); at least one, and B >= `MIN_BATCH_SIZE`
      for unbiased statistics of the deeper layers.

  Returns:
    The model's tensors in DeepMind's layout (`Flow/inception_i3d/...`, as
    `i3d.checkpoints.variable_map` names them) with the re-estimated
    `moving_mean` and `moving_variance`, float32 [C] each.

  Raises:
    ValueError: if `clips` is empty.
  """
  scope = checkpoints.stream_scope(stream)
  tensors = {name: variable.numpy() for name, variable in
             checkpoints.variable_map(model, scope).items()}
  copy = i3d_model.InceptionI3d(model.num_classes,
                                final_endpoint=model.final_endpoint)
  checkpoints.restore_tensors(copy, stream, tensors, include_logits=None,
                              source=f"the {scope} model")
  norms = batch_norms(copy)
  for norm in norms:
    # With decay 0 a training-mode call leaves the batch's own statistics in
    # the moving averages; starting from 0 makes that exact in floating point.
    norm.decay_rate = 0.0

  # Eager: tracing the trunk costs more than the few batches run here.
  def batch_statistics(batch: tf.Tensor) -> List[tf.Tensor]:
    for norm in norms:
      norm.moving_mean.assign(tf.zeros_like(norm.moving_mean))
      norm.moving_variance.assign(tf.zeros_like(norm.moving_variance))
    copy.features(batch, is_training=True)
    return [tf.stack([n.moving_mean, n.moving_variance]) for n in norms]

  sums = [np.zeros((2, n.moving_mean.shape[0])) for n in norms]
  num_clips = 0
  for batch in clips:
    size = int(batch.shape[0])
    for total, statistics in zip(sums, batch_statistics(batch)):
      mean, variance = statistics.numpy().astype(np.float64)
      total += size * np.stack([mean, variance + mean**2])
    num_clips += size
  if not num_clips:
    raise ValueError(f"No clips to estimate the {scope} batch-norm statistics")
  names = {id(v): n for n, v in checkpoints.variable_map(copy, scope).items()}
  for norm, total in zip(norms, sums):
    mean, square = total / num_clips
    tensors[names[id(norm.moving_mean)]] = mean.astype(np.float32)
    tensors[names[id(norm.moving_variance)]] = np.maximum(
        square - mean**2, 0.0).astype(np.float32)
  logging.info("Estimated %d batch-norm statistics of %s on %d clips",
               len(norms), scope, num_clips)
  return tensors


def reestimate_statistics(model: i3d_model.InceptionI3d, stream: str,
                          clips: Iterable[tf.Tensor]) -> None:
  """Sets the model's batch-norm statistics to those of `clips` (AdaBN).

  Only `moving_mean` and `moving_variance` change; works under any
  distribution strategy (the variables are assigned as a checkpoint restore
  assigns them).

  Args:
    model: a built stream model, e.g. a flow stream after cross-modality
      init.
    stream: "rgb" or "flow".
    clips: see `estimate_statistics`.

  Raises:
    ValueError: if `clips` is empty.
  """
  checkpoints.restore_tensors(
      model, stream, estimate_statistics(model, stream, clips),
      include_logits=None,
      source=f"{checkpoints.stream_scope(stream)} batch-norm statistics "
      "re-estimated on training clips")
