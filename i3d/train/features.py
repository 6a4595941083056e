"""The frozen backbone: each stream split at its last frozen endpoint, and the
cache of the frozen part's outputs (the fast path for small data).

With a frozen part of the backbone (`--trainable` other than `all`) its output
is computed once for `feature_views` augmented views of each training video
(`training_features`) and the rest trains on those.
"""

import hashlib
import json
import math
import os
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from i3d import config as config_lib
from i3d import fileio
from i3d import model as i3d_model
from i3d import precision
from i3d.data import cache
from i3d.data import pipeline

FEATURES_SUBDIR = "features"

# TrainConfig fields that change the cached training features.
_FEATURE_KEYS = ("cache_dir", "stream", "num_frames", "crop_size", "batch_size",
                 "seed", "feature_views", "rgb_checkpoint", "flow_checkpoint",
                 "classes", "trainable", "flow_batch_norm_batches")


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


def _fingerprint(value: Any) -> str:
  text = json.dumps(value, sort_keys=True)
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def clip_dataset(config: config_lib.TrainConfig, seed: int,
                 repeat: bool | int = True) -> tf.data.Dataset:
  """The run's training clips: augmented batches of its training split.

  Args:
    config: the run's settings (cache, streams, clip length, crop, batch).
    seed: the shuffle and augmentation seed.
    repeat: True for endless batches, n for n passes over the split.

  Returns:
    Batches (see `i3d.data.pipeline.make_train_dataset`).
  """
  return pipeline.make_train_dataset(
      config.cache_dir, streams=config.streams,
      num_frames=config.num_frames, crop_size=config.crop_size,
      batch_size=config.batch_size, seed=seed, repeat=repeat)


def frozen_features(stages: Mapping[str, StreamStages],
                    batches: tf.data.Dataset,
                    num_batches: Optional[int] = None,
                    keep: Sequence[str] = ("label", "index"),
                    bfloat16: bool = False) -> Dict[str, np.ndarray]:
  """Runs the frozen part of each stream over batches and stacks the outputs.

  Args:
    stages: stream -> its split.
    batches: a finite dataset of batches of {stream: clips, and the `keep`
      keys} (see `clip_dataset`'s `repeat`).
    num_batches: how many it holds, for the progress log; None: unknown.
    keep: keys copied from the batches beside the features.
    bfloat16: run the frozen part with the bfloat16 rewrite (see
      `i3d.precision`).

  Returns:
    {stream: the frozen part's outputs, key: values} over all batches.

  Raises:
    ValueError: if `batches` is endless.
  """
  if batches.cardinality() == tf.data.INFINITE_CARDINALITY:
    raise ValueError("frozen_features needs a finite dataset")
  frozen = tf.function(lambda x: {s: st.frozen(x[s])
                                  for s, st in stages.items()})
  outputs: Dict[str, List[np.ndarray]] = {}
  started = time.monotonic()
  for i, batch in enumerate(batches):
    with precision.inference_precision(bfloat16):
      values = frozen(batch)
    for key, value in values.items():
      outputs.setdefault(key, []).append(value.numpy())
    for key in keep:
      outputs.setdefault(key, []).append(batch[key].numpy())
    if num_batches and (i + 1) % 10 == 0:
      elapsed = time.monotonic() - started
      logging.info("Features: %d/%d batches, ETA %.0f s", i + 1, num_batches,
                   elapsed / (i + 1) * (num_batches - i - 1))
  return {k: np.concatenate(v) for k, v in outputs.items()}


def training_features(stages: Mapping[str, StreamStages],
                      config: config_lib.TrainConfig) -> Dict[str, np.ndarray]:
  """Frozen outputs of `feature_views` augmented views per training video.

  Computed once and cached in `train_dir/features/`, keyed by the settings
  that change them and the cached videos.

  Args:
    stages: stream -> its split, with the run's weights.
    config: the run's settings.

  Returns:
    {stream: frozen outputs, "label": int32, "index": int32}, one row per
    view.
  """
  entries = cache.read_cache(config.cache_dir).split_entries("train")
  num_videos = len(entries)
  num_batches = math.ceil(num_videos * config.feature_views /
                          config.batch_size)
  bfloat16 = precision.use_inference_bfloat16(config.inference_bfloat16)
  # bfloat16 features differ from float32 ones by about 1%; float32 caches
  # keep the keys they had before bfloat16 existed.
  key = _fingerprint({"config": {k: v for k, v in config.to_json().items()
                                 if k in _FEATURE_KEYS},
                      "videos": [(e.path, e.key) for e in entries],
                      **({"bfloat16": True} if bfloat16 else {})})
  path = os.path.join(config.train_dir, FEATURES_SUBDIR, f"train-{key}.npz")
  if os.path.exists(path):
    with np.load(path) as cached:
      return dict(cached)
  logging.info("Computing frozen features: %d views of %d videos",
               config.feature_views, num_videos)
  features = frozen_features(
      stages, clip_dataset(config, config.seed, repeat=config.feature_views),
      num_batches, bfloat16=bfloat16)
  with fileio.atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      np.savez(f, **features)
  return features
