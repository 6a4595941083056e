"""Inception-v1 Inflated 3D ConvNet (I3D) in Sonnet 2.

A port of DeepMind's `i3d.py` (kinetics-i3d, Apache-2.0) from Sonnet 1 to
Sonnet 2 that creates the same variables, name for name and shape for shape, so
DeepMind's Kinetics checkpoints restore by name (see `i3d.checkpoints`).

"Quo Vadis, Action Recognition? A New Model and the Kinetics Dataset"
Joao Carreira, Andrew Zisserman, https://arxiv.org/abs/1705.07750v1

Variable names, relative to the `inception_i3d` module, are
`<endpoint>[/Branch_<i>/<unit>]/conv_3d/{w,b}` and
`.../batch_norm/{beta,moving_mean,moving_variance}`; DeepMind's checkpoints put
the model under `RGB/` or `Flow/` (`RGB/inception_i3d/Conv3d_1a_7x7/conv_3d/w`).
"""

from typing import Callable, Dict, Optional, Sequence, Tuple

import sonnet as snt
import tensorflow as tf

VALID_ENDPOINTS: Tuple[str, ...] = (
    "Conv3d_1a_7x7",
    "MaxPool3d_2a_3x3",
    "Conv3d_2b_1x1",
    "Conv3d_2c_3x3",
    "MaxPool3d_3a_3x3",
    "Mixed_3b",
    "Mixed_3c",
    "MaxPool3d_4a_3x3",
    "Mixed_4b",
    "Mixed_4c",
    "Mixed_4d",
    "Mixed_4e",
    "Mixed_4f",
    "MaxPool3d_5a_2x2",
    "Mixed_5b",
    "Mixed_5c",
    "Logits",
    "Predictions",
)

# Output channels of the six convolutions of each Inception block, in the order
# Branch_0 1x1; Branch_1 1x1, 3x3; Branch_2 1x1, 3x3; Branch_3 1x1 (after pool).
_MIXED_CHANNELS: Dict[str, Tuple[int, int, int, int, int, int]] = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}

# (kernel, stride) of the max pools, as [T, H, W].
_MAX_POOLS: Dict[str, Tuple[Sequence[int], Sequence[int]]] = {
    "MaxPool3d_2a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_3a_3x3": ((1, 3, 3), (1, 2, 2)),
    "MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)),
    "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2)),
}

# The original averages Mixed_5c over a 2x7x7 VALID window: at 224x224 the
# feature map is 7x7, so this pools space completely and time in pairs.
LOGITS_POOL_SIZE: Tuple[int, int, int] = (2, 7, 7)
FEATURE_CHANNELS = 1024


class BatchNorm(snt.Module):
  """Batch normalisation as in Sonnet 1's `snt.BatchNorm` defaults used by I3D.

  Learns an offset `beta` only (no scale), normalises with epsilon 1e-3 and
  keeps `moving_mean` / `moving_variance` of shape [C], updated in training as
  `moving -= (1 - decay) * (moving - batch_statistic)` with decay 0.999. Unlike
  `snt.BatchNorm` there is no debiasing counter, so statistics restored from a
  checkpoint are the starting point of the moving averages, not overwritten.

  Attributes:
    decay_rate: decay of the moving averages, read when a training-mode call
      is traced; 0 makes a call store the batch's own statistics (see
      `i3d.train.batch_norm`).
  """

  def __init__(self,
               decay_rate: float = 0.999,
               eps: float = 1e-3,
               name: str = "batch_norm"):
    """Constructs the module.

    Args:
      decay_rate: decay of the moving averages.
      eps: added to the variance before the square root.
      name: module name.
    """
    super().__init__(name=name)
    self.decay_rate = decay_rate
    self._eps = eps

  @snt.once
  def _initialize(self, inputs: tf.Tensor) -> None:
    channels = inputs.shape[-1]
    self.beta = tf.Variable(tf.zeros([channels]), name="beta")
    # ON_READ + MEAN: each replica updates its own copy under a distribution
    # strategy, and reads (checkpoints, inference) see the replica average.
    self.moving_mean = tf.Variable(
        tf.zeros([channels]), name="moving_mean", trainable=False,
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.MEAN)
    self.moving_variance = tf.Variable(
        tf.ones([channels]), name="moving_variance", trainable=False,
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.MEAN)

  def __call__(self, inputs: tf.Tensor, is_training: bool) -> tf.Tensor:
    """Normalises `inputs` over all axes but the last.

    Args:
      inputs: a tensor [..., C].
      is_training: use and accumulate batch statistics if True, else use the
        moving averages.

    Returns:
      The normalised tensor, same shape and dtype as `inputs`.
    """
    self._initialize(inputs)
    if is_training:
      stats_inputs = tf.cast(inputs, tf.float32)
      mean, variance = tf.nn.moments(
          stats_inputs, axes=list(range(len(inputs.shape) - 1)))
      decay = 1.0 - self.decay_rate
      self.moving_mean.assign_sub(decay * (self.moving_mean - mean))
      self.moving_variance.assign_sub(
          decay * (self.moving_variance - variance))
    else:
      mean, variance = self.moving_mean, self.moving_variance
    dtype = inputs.dtype
    return tf.nn.batch_normalization(
        inputs, tf.cast(mean, dtype), tf.cast(variance, dtype),
        offset=tf.cast(self.beta, dtype), scale=None, variance_epsilon=self._eps)


class Unit3D(snt.Module):
  """Basic unit: Conv3D (SAME padding), optional batch norm and activation."""

  def __init__(self,
               output_channels: int,
               kernel_shape: Sequence[int] = (1, 1, 1),
               stride: Sequence[int] = (1, 1, 1),
               activation_fn: Optional[Callable[[tf.Tensor], tf.Tensor]] = (
                   tf.nn.relu),
               use_batch_norm: bool = True,
               use_bias: bool = False,
               name: str = "unit_3d"):
    """Constructs the unit.

    Args:
      output_channels: number of output channels.
      kernel_shape: [T, H, W] of the kernel.
      stride: [T, H, W] stride.
      activation_fn: applied last; None for a linear unit.
      use_batch_norm: whether to batch-normalise the convolution output.
      use_bias: whether the convolution has a bias.
      name: module name (the checkpoint scope, e.g. "Conv3d_1a_7x7").
    """
    super().__init__(name=name)
    self._activation_fn = activation_fn
    self.conv = snt.Conv3D(
        output_channels=output_channels, kernel_shape=kernel_shape,
        stride=stride, padding="SAME", with_bias=use_bias, name="conv_3d")
    self.batch_norm = BatchNorm() if use_batch_norm else None

  def __call__(self, inputs: tf.Tensor, is_training: bool) -> tf.Tensor:
    """Applies the unit to a [B, T, H, W, C] tensor."""
    net = self.conv(inputs)
    if self.batch_norm is not None:
      net = self.batch_norm(net, is_training=is_training)
    if self._activation_fn is not None:
      net = self._activation_fn(net)
    return net


def _max_pool(inputs: tf.Tensor, kernel: Sequence[int],
              stride: Sequence[int]) -> tf.Tensor:
  return tf.nn.max_pool3d(
      inputs, ksize=[1, *kernel, 1], strides=[1, *stride, 1], padding="SAME")


class InceptionBlock(snt.Module):
  """An inflated Inception ("Mixed") block: four branches, concatenated."""

  def __init__(self, channels: Sequence[int], name: str):
    """Constructs the block.

    Args:
      channels: the six output channel counts (see `_MIXED_CHANNELS`).
      name: the endpoint name, e.g. "Mixed_3b".
    """
    super().__init__(name=name)
    b0, b1a, b1b, b2a, b2b, b3 = channels
    # DeepMind's graph names one unit "Conv3d_0a_3x3" in Mixed_5b (every other
    # block has "Conv3d_0b_3x3"); the checkpoints carry that name.
    branch_2_3x3 = "Conv3d_0a_3x3" if name == "Mixed_5b" else "Conv3d_0b_3x3"
    with tf.name_scope("Branch_0"):
      self.branch_0 = [Unit3D(b0, name="Conv3d_0a_1x1")]
    with tf.name_scope("Branch_1"):
      self.branch_1 = [Unit3D(b1a, name="Conv3d_0a_1x1"),
                       Unit3D(b1b, kernel_shape=(3, 3, 3),
                              name="Conv3d_0b_3x3")]
    with tf.name_scope("Branch_2"):
      self.branch_2 = [Unit3D(b2a, name="Conv3d_0a_1x1"),
                       Unit3D(b2b, kernel_shape=(3, 3, 3), name=branch_2_3x3)]
    with tf.name_scope("Branch_3"):
      self.branch_3 = [Unit3D(b3, name="Conv3d_0b_1x1")]

  def __call__(self, inputs: tf.Tensor, is_training: bool) -> tf.Tensor:
    """Applies the block to a [B, T, H, W, C] tensor."""
    outputs = []
    for branch in (self.branch_0, self.branch_1, self.branch_2, self.branch_3):
      net = inputs
      if branch is self.branch_3:
        net = _max_pool(net, (3, 3, 3), (1, 1, 1))
      for unit in branch:
        net = unit(net, is_training=is_training)
      outputs.append(net)
    return tf.concat(outputs, axis=4)


# Variables are created on the first call; allowing an empty `variables` lets
# callers test whether the model is built yet.
@snt.allow_empty_variables
class InceptionI3d(snt.Module):
  """Inception-v1 I3D architecture.

  The model is introduced in "Quo Vadis, Action Recognition? A New Model and
  the Kinetics Dataset" (Carreira and Zisserman, 2017); this port follows
  DeepMind's Sonnet 1 implementation, endpoints and variables included.

  Inputs are [B, T, H, W, C] clips (C = 3 for RGB, 2 for optical flow) with
  values in [-1, 1]. The logits head pools Mixed_5c with a
  `LOGITS_POOL_SIZE` (2x7x7) VALID average pool, as the original; where the
  Mixed_5c map is smaller than that (inputs under 224x224 pixels, or under 9
  frames), each window dimension is clipped to the map's size, so any input of
  at least one frame and pixel works and 224x224 inputs of 9 or more frames
  give exactly the original's outputs. Inputs larger than 224x224 (uncropped
  frames) are classified fully convolutionally: the logits of every position
  of the pooled map are averaged, where the original fails.
  """

  def __init__(self,
               num_classes: int = 400,
               spatial_squeeze: bool = True,
               final_endpoint: str = "Logits",
               name: str = "inception_i3d"):
    """Initializes the I3D model.

    Args:
      num_classes: number of outputs of the logits layer.
      spatial_squeeze: whether to remove the spatial dimensions of the logits
        before averaging them over time: squeezed at one position (224x224
        inputs, as the original), averaged over several (larger inputs).
      final_endpoint: the last endpoint the model computes and returns; the
        variables of later endpoints are not created.
      name: module name.

    Raises:
      ValueError: if `final_endpoint` is not a valid endpoint.
    """
    if final_endpoint not in VALID_ENDPOINTS:
      raise ValueError(f"Unknown final endpoint {final_endpoint!r}; valid "
                       f"endpoints are {', '.join(VALID_ENDPOINTS)}")
    super().__init__(name=name)
    self.num_classes = num_classes
    self._spatial_squeeze = spatial_squeeze
    self.final_endpoint = final_endpoint

    last = VALID_ENDPOINTS.index(final_endpoint)
    self._layers = {}
    for endpoint in VALID_ENDPOINTS[:min(last, VALID_ENDPOINTS.index("Logits"))
                                    + 1]:
      if endpoint == "Conv3d_1a_7x7":
        self._layers[endpoint] = Unit3D(64, (7, 7, 7), (2, 2, 2), name=endpoint)
      elif endpoint == "Conv3d_2b_1x1":
        self._layers[endpoint] = Unit3D(64, name=endpoint)
      elif endpoint == "Conv3d_2c_3x3":
        self._layers[endpoint] = Unit3D(192, (3, 3, 3), name=endpoint)
      elif endpoint in _MIXED_CHANNELS:
        self._layers[endpoint] = InceptionBlock(_MIXED_CHANNELS[endpoint],
                                                name=endpoint)
    self.logits = None
    if last >= VALID_ENDPOINTS.index("Logits"):
      with tf.name_scope("Logits"):
        self.logits = Unit3D(num_classes, activation_fn=None,
                             use_batch_norm=False, use_bias=True,
                             name="Conv3d_0c_1x1")

  def features(self, inputs: tf.Tensor, is_training: bool,
               end_points: Optional[Dict[str, tf.Tensor]] = None,
               first_endpoint: str = VALID_ENDPOINTS[0],
               last_endpoint: Optional[str] = None) -> tf.Tensor:
    """Runs the convolutional part of the network, Conv3d_1a_7x7 to Mixed_5c.

    Args:
      inputs: [B, T, H, W, C] clips; or, with `first_endpoint`, the output of
        the endpoint before it.
      is_training: batch norm mode.
      end_points: if given, filled with every endpoint computed.
      first_endpoint: the first endpoint to compute.
      last_endpoint: the last endpoint to compute; by default Mixed_5c, or the
        final endpoint if it comes earlier.

    Returns:
      The output of the last endpoint computed.
    """
    convolutional = VALID_ENDPOINTS[:VALID_ENDPOINTS.index("Logits")]
    if last_endpoint is None:
      last_endpoint = (self.final_endpoint if self.final_endpoint in
                       convolutional else convolutional[-1])
    net = inputs
    for endpoint in convolutional[convolutional.index(first_endpoint):
                                  convolutional.index(last_endpoint) + 1]:
      if endpoint in _MAX_POOLS:
        net = _max_pool(net, *_MAX_POOLS[endpoint])
      else:
        net = self._layers[endpoint](net, is_training=is_training)
      if end_points is not None:
        end_points[endpoint] = net
    return net

  def endpoint_variables(self, endpoint: str) -> Tuple[tf.Variable, ...]:
    """The variables of one endpoint ("Logits" for the logits layer)."""
    if endpoint == "Logits":
      return tuple(self.logits.variables) if self.logits else ()
    layer = self._layers.get(endpoint)
    return tuple(layer.variables) if layer is not None else ()

  @staticmethod
  def pool(mixed_5c: tf.Tensor) -> tf.Tensor:
    """Average-pools Mixed_5c features as the logits head does.

    A VALID average pool over `LOGITS_POOL_SIZE` (2x7x7) with stride 1, each
    window dimension clipped to the feature map's size. T may be dynamic (a
    serving signature of any clip length), and so may H and W (a serving
    signature of any frame size); dynamic H and W pool each in turn, which
    equals the joint pool up to float rounding.

    Args:
      mixed_5c: [B, T', H', W', 1024] features.

    Returns:
      [B, T'', H'', W'', 1024] pooled features (1x1 spatially at 224x224).
    """
    window_t, window_h, window_w = LOGITS_POOL_SIZE  # window_t is 2.
    height, width = mixed_5c.shape[2:4]
    if height is not None and width is not None:
      net = tf.nn.avg_pool3d(
          mixed_5c, ksize=[1, 1, min(window_h, height), min(window_w, width),
                           1], strides=[1, 1, 1, 1, 1], padding="VALID")
    else:
      net = mixed_5c
      for axis, window in ((2, window_h), (3, window_w)):
        ksize = [1] * 5
        ksize[axis] = window
        net = tf.cond(
            tf.shape(net)[axis] >= window,
            lambda n=net, k=ksize: tf.nn.avg_pool3d(n, k, [1] * 5, "VALID"),
            lambda n=net, a=axis: tf.reduce_mean(n, axis=a, keepdims=True))

    def mean_of_pairs():  # The 2-frame temporal window, stride 1.
      return (net[:, :-1] + net[:, 1:]) / 2.0

    frames = net.shape[1]
    if frames is not None:
      return mean_of_pairs() if frames >= window_t else net
    return tf.cond(tf.shape(net)[1] >= window_t, mean_of_pairs, lambda: net)

  @staticmethod
  def logits_positions(height: int, width: int) -> Tuple[int, int]:
    """The spatial positions the logits of an input of this size average.

    Mixed_5c halves the frame size five times (rounding up, SAME padding);
    the logits pool then leaves one position per 7x7 window of it. A 224x224
    input has one position; a 256x340 one has 2x5, whose logits `head`
    averages (the model is fully convolutional).

    Args:
      height: input height in pixels.
      width: input width in pixels.

    Returns:
      (rows, columns) of logits positions.
    """
    def positions(size: int, window: int) -> int:
      for _ in range(5):
        size = -(-size // 2)
      return size - min(window, size) + 1

    return (positions(height, LOGITS_POOL_SIZE[1]),
            positions(width, LOGITS_POOL_SIZE[2]))

  def head(self, pooled: tf.Tensor, is_training: bool,
           dropout_keep_prob: float = 1.0) -> tf.Tensor:
    """The logits head: dropout, 1x1x1 Conv3D, then the mean over time.

    Args:
      pooled: output of `pool`.
      is_training: whether dropout is active.
      dropout_keep_prob: probability of keeping each activation in training.

    Returns:
      [B, num_classes] logits, averaged over time.

    Raises:
      ValueError: if the model has no logits layer.
    """
    if self.logits is None:
      raise ValueError(f"The model stops at {self.final_endpoint}, before "
                       "Logits")
    net = pooled
    if is_training and dropout_keep_prob < 1.0:
      net = tf.nn.dropout(net, rate=1.0 - dropout_keep_prob)
    logits = self.logits(net, is_training=is_training)
    if self._spatial_squeeze:
      if logits.shape[2:4] == (1, 1):
        logits = tf.squeeze(logits, [2, 3], name="SpatialSqueeze")
      else:
        # Inputs larger than 224x224 leave several spatial positions (see
        # `logits_positions`): classify fully convolutionally, as the time
        # axis is, by averaging their logits.
        logits = tf.reduce_mean(logits, axis=[2, 3], name="SpatialMean")
    return tf.reduce_mean(logits, axis=1)

  def __call__(self, inputs: tf.Tensor, is_training: bool,
               dropout_keep_prob: float = 1.0
               ) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """Connects the model to inputs.

    Args:
      inputs: [B, T, H, W, C] clips with values in [-1, 1].
      is_training: whether batch norm uses and updates batch statistics and
        dropout is active.
      dropout_keep_prob: probability of keeping activations before the logits.

    Returns:
      (output of the final endpoint, dict of all endpoints computed). For
      "Logits" the output is [B, num_classes], averaged over time.
    """
    end_points = {}
    net = self.features(inputs, is_training, end_points)
    if self.logits is None:
      return net, end_points
    logits = self.head(self.pool(net), is_training, dropout_keep_prob)
    end_points["Logits"] = logits
    if self.final_endpoint == "Logits":
      return logits, end_points
    predictions = tf.nn.softmax(logits)
    end_points["Predictions"] = predictions
    return predictions, end_points
