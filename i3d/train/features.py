"""The frozen backbone: each stream split at its last frozen endpoint, and the
cache of the frozen part's outputs (the fast path for small data).

With a frozen part of the backbone (`--trainable` other than `all`) its output
is computed once for `feature_views` augmented views of each training video
(`training_features`) and the rest trains on those; `logits_from_features`
evaluates a split from the cached outputs of its evaluation views.

The cache is kept per stream, video and view, not per run or split:

  FEATURES_DIR/train-SETTINGS/KEY.npz   {stream: [feature_views, ...]}
  FEATURES_DIR/eval-SETTINGS/KEY.npz    {stream: [views, T', ...]}

KEY is the video's cache key (its content and preprocessing) and SETTINGS a
hash of the stream and the settings that change its frozen part's outputs
(clip length, crop, views, seed, weights, boundary; for a flow stream whose
batch-norm statistics are re-estimated, the training videos they come from),
so a video's features serve every run and every cross-validation fold that
shares them and are computed once: the RGB features of a cross-validation
are computed once for all folds, the flow features once per fold. Each file
is written atomically, so an interrupted run keeps the videos it finished.
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
from i3d.eval import metrics as metrics_lib

FEATURES_SUBDIR = "features"

# TrainConfig fields that change a video's frozen features, of the training
# views and of the evaluation views. The cache, split and class list do not.
_FROZEN_WEIGHT_KEYS = ("rgb_checkpoint", "flow_checkpoint", "init_from",
                      "trainable", "flow_batch_norm_batches")
_TRAIN_VIEW_KEYS = _FROZEN_WEIGHT_KEYS + ("num_frames", "crop_size", "seed",
                                          "feature_views")
_EVAL_VIEW_KEYS = _FROZEN_WEIGHT_KEYS + ("crop_size", "eval_num_frames",
                                         "eval_num_clips", "eval_num_crops")
# Videos whose training views are computed (and saved) together.
_CHUNK_VIDEOS = 32


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


def features_dir(config: config_lib.TrainConfig) -> str:
  """Where a run's frozen features are cached: `features_dir` or train_dir's."""
  return config.features_dir or os.path.join(config.train_dir,
                                             FEATURES_SUBDIR)


def _store(config: config_lib.TrainConfig, kind: str, stream: str,
           bfloat16: bool) -> str:
  """The folder of one kind ("train" or "eval") of one stream's views.

  Re-estimated flow batch-norm statistics come from the training split's
  clips (`i3d.train.batch_norm`), so its videos are part of the flow key
  then: folds with other training subjects get their own flow features.
  """
  keys = _TRAIN_VIEW_KEYS if kind == "train" else _EVAL_VIEW_KEYS
  settings = {k: v for k, v in config.to_json().items() if k in keys}
  settings["stream"] = stream
  if (stream == "flow" and not config.flow_checkpoint and
      config.flow_batch_norm_batches):
    settings["flow_statistics_videos"] = sorted(
        e.key for e in cache.read_cache(config.cache_dir).split_entries(
            "train"))
  # bfloat16 features differ from float32 ones by about 1%.
  if bfloat16:
    settings["bfloat16"] = True
  return os.path.join(features_dir(config), f"{kind}-{_fingerprint(settings)}")


def _video_file(store: str, entry: cache.CacheEntry) -> str:
  return os.path.join(store, f"{entry.key}.npz")


def _save_video(store: str, entry: cache.CacheEntry,
                arrays: Mapping[str, np.ndarray]) -> None:
  with fileio.atomic_path(_video_file(store, entry)) as tmp:
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)


def _load_video(store: str, entry: cache.CacheEntry) -> Dict[str, np.ndarray]:
  with np.load(_video_file(store, entry)) as arrays:
    return dict(arrays)


def _missing(stores: Mapping[str, str], entries: Sequence[cache.CacheEntry]
             ) -> Dict[tuple, List[cache.CacheEntry]]:
  """The entries without cached files, grouped by the streams they lack.

  Each video once (duplicates share a key). In a cross-validation fold most
  videos lack only the flow features of the fold's statistics.
  """
  groups: Dict[tuple, List[cache.CacheEntry]] = {}
  for entry in {e.key: e for e in entries}.values():
    streams = tuple(s for s, store in stores.items()
                    if not os.path.exists(_video_file(store, entry)))
    if streams:
      groups.setdefault(streams, []).append(entry)
  return groups


def training_features(stages: Mapping[str, StreamStages],
                      config: config_lib.TrainConfig) -> Dict[str, np.ndarray]:
  """Frozen outputs of `feature_views` augmented views per training video.

  Each video's views are computed once (`pipeline.make_feature_views_dataset`:
  view v of a video is the same in every run with these settings) and cached
  per video in `features_dir(config)`; videos already there are read back.

  Args:
    stages: stream -> its split, with the run's frozen weights.
    config: the run's settings.

  Returns:
    {stream: frozen outputs [N * feature_views, ...], "label": int32,
    "index": int32 (the video's position in the training split)}, the views
    of each training video in split order.
  """
  info = cache.read_cache(config.cache_dir)
  entries = info.split_entries("train")
  bfloat16 = precision.use_inference_bfloat16(config.inference_bfloat16)
  stores = {s: _store(config, "train", s, bfloat16) for s in stages}
  for streams, videos in _missing(stores, entries).items():
    logging.info("Frozen features: %s, %d views of %d of the %d training "
                 "videos to compute", "+".join(streams), config.feature_views,
                 len(videos), len(entries))
    # In chunks, each saved when done, so that a killed run keeps them.
    for start in range(0, len(videos), _CHUNK_VIDEOS):
      chunk = videos[start:start + _CHUNK_VIDEOS]
      views = frozen_features(
          {s: stages[s] for s in streams},
          pipeline.make_feature_views_dataset(
              info, chunk, streams, config.num_frames, config.crop_size,
              config.feature_views, config.seed, config.batch_size),
          math.ceil(len(chunk) * config.feature_views / config.batch_size),
          keep=("index",), bfloat16=bfloat16)
      for position, entry in enumerate(chunk):
        rows = views["index"] == position
        for stream in streams:
          _save_video(stores[stream], entry, {stream: views[stream][rows]})
      logging.info("Frozen features: %d of %d videos done", start + len(chunk),
                   len(videos))
  stored = {s: [_load_video(stores[s], e)[s] for e in entries]
            for s in stages}
  return {
      **{s: np.concatenate(v) for s, v in stored.items()},
      "label": np.repeat([e.label_index for e in entries],
                         config.feature_views).astype(np.int32),
      "index": np.repeat(np.arange(len(entries)),
                         config.feature_views).astype(np.int32),
  }


def logits_from_features(stages: Mapping[str, StreamStages],
                         config: config_lib.TrainConfig,
                         split: str) -> Dict[str, np.ndarray]:
  """Each stream's logits of a split's videos, from cached frozen outputs.

  The same multi-view test as `i3d.eval.evaluate.evaluate_model` (the run's
  `eval_num_*` views, logits averaged over them), but the frozen part runs
  once per video and view for every run and fold with these settings
  (cached in `features_dir(config)`); only the trainable part runs here.

  Args:
    stages: stream -> its split, with the trained weights.
    config: the run's settings.
    split: the split of `config.cache_dir` to evaluate.

  Returns:
    {stream: float64 [N, K] logits}, the split's videos in split order.
  """
  info = cache.read_cache(config.cache_dir)
  entries = info.split_entries(split)
  stores = {s: _store(config, "eval", s, bfloat16=False) for s in stages}
  for streams, missing in _missing(stores, entries).items():
    logging.info("Computing frozen %s features of the evaluation views of "
                 "%d videos (%d cached)", "+".join(streams), len(missing),
                 len(entries) - len(missing))
    frozen = tf.function(
        lambda x, streams=streams: {s: stages[s].frozen(x[s])
                                    for s in streams},
        reduce_retracing=True)
    # A whole video longer than the window spans several elements, which
    # may interleave with other videos' elements.
    views: Dict[int, Dict[str, List[np.ndarray]]] = {}
    for element in pipeline.make_eval_views(
        info, missing, streams, config.eval_num_frames,
        config.crop_size, config.eval_num_clips, config.eval_num_crops):
      video = views.setdefault(int(element["index"]), {s: [] for s in streams})
      for stream, value in frozen(element).items():
        video[stream].append(value.numpy())
    for position, video in views.items():
      for stream, values in video.items():
        _save_video(stores[stream], missing[position],
                    {stream: np.concatenate(values)})
  trainable = tf.function(
      lambda x: {s: st.trainable(x[s], is_training=False,
                                 batch_norm_training=False,
                                 dropout_keep_prob=1.0)
                 for s, st in stages.items()},
      reduce_retracing=True)
  logits = {s: [] for s in stages}
  for entry in entries:
    inputs = {s: _load_video(stores[s], entry)[s] for s in stages}
    for stream, value in trainable(inputs).items():
      logits[stream].append(metrics_lib.average_views(value.numpy()))
  return {s: np.stack(v) for s, v in logits.items()}
