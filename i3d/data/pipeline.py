"""tf.data pipelines over a prepared cache: training clips and evaluation views.

Only the frames a clip needs are decoded, for the streams asked for. RGB and
flow share each clip's start, crop and mirror (a mirror negates flow x).
"""

from typing import Any, Sequence

import numpy as np
import tensorflow as tf

from i3d import streams as streams_lib
from i3d.data import cache
from i3d.data import sources
from i3d.video import preprocess

def _read_encoded_frames(path: tf.Tensor, stream: str) -> tf.Tensor:
  """Returns the encoded frames of a stream file, a string tensor [T]."""
  feature = f"{stream}/encoded"
  _, sequence = tf.io.parse_single_sequence_example(
      tf.io.read_file(path),
      sequence_features={feature: tf.io.FixedLenSequenceFeature([], tf.string)})
  return sequence[feature]


def _decode_frames(encoded: tf.Tensor, stream: str) -> tf.Tensor:
  """Decodes JPEG frames [N] to model-range float32 [N, H, W, C]."""
  channels = 3 if stream == "rgb" else 1
  frames = tf.map_fn(
      lambda data: tf.io.decode_jpeg(
          data, channels=channels, dct_method="INTEGER_ACCURATE"),
      encoded,
      fn_output_signature=tf.TensorSpec([None, None, channels], tf.uint8))
  frames = tf.cast(frames, tf.float32)
  if stream == "rgb":
    # The graph twin of `preprocess.rgb_to_model`.
    return frames / 255.0 * 2.0 - 1.0
  # [N, 2H, W, 1], x above y -> [N, H, W, 2].
  shape = tf.shape(frames)
  frames = tf.reshape(frames, [shape[0], 2, shape[1] // 2, shape[2]])
  frames = tf.transpose(frames, [0, 2, 3, 1])
  return tf.clip_by_value(
      (frames - preprocess.FLOW_JPEG_ZERO) / preprocess.FLOW_JPEG_SCALE,
      -1.0, 1.0)


def _frames_at(path: tf.Tensor, stream: str, indices: tf.Tensor) -> tf.Tensor:
  """Decodes the frames at `indices` [N] of a stream file, each once."""
  return _decode_frames_at(_read_encoded_frames(path, stream), stream, indices)


def _decode_frames_at(encoded: tf.Tensor, stream: str,
                      indices: tf.Tensor) -> tf.Tensor:
  """Decodes the frames at `indices` [N] of encoded frames [T], each once."""
  unique_indices, positions = tf.unique(indices)
  return tf.gather(
      _decode_frames(tf.gather(encoded, unique_indices), stream), positions)


def clip_frame_indices(start: tf.Tensor, num_frames: tf.Tensor | int,
                       total: tf.Tensor) -> tf.Tensor:
  """Frame indices of clips: `num_frames` from `start`, looping the video.

  A video shorter than the clip is played again from its first frame as often
  as needed (frame i of the clip is frame (start + i) mod total).

  Args:
    start: clip start(s), an int32 scalar or vector [K].
    num_frames: clip length.
    total: frames in the video.

  Returns:
    int32 indices, [num_frames] for a scalar start, else [K, num_frames].
  """
  return (tf.expand_dims(start, -1) + tf.range(num_frames)) % total


def _flip_horizontally(frames: tf.Tensor, stream: str) -> tf.Tensor:
  """Mirrors [..., H, W, C] frames; flow x changes sign with the mirror."""
  flipped = tf.reverse(frames, axis=[-2])
  if stream == "flow":
    flipped *= tf.constant([-1.0, 1.0])
  return flipped


def _split_source(
    cache_dir: str, split: str, streams: Sequence[str],
    crop_size: int) -> tuple[list[cache.CacheEntry], dict[str, list[Any]]]:
  """Checks a split; returns its entries and per-video columns."""
  info = cache.read_cache(cache_dir)
  entries = _nonempty_split(info, split)
  return entries, _entry_columns(info, entries, streams, crop_size)


def _nonempty_split(info: cache.CacheInfo,
                    split: str) -> list[cache.CacheEntry]:
  entries = info.split_entries(split)
  if not entries:
    raise sources.DatasetError(
        f"{info.cache_dir}: the {split!r} split is empty")
  return entries


def _entry_columns(info: cache.CacheInfo, entries: Sequence[cache.CacheEntry],
                   streams: Sequence[str],
                   crop_size: int) -> dict[str, list[Any]]:
  """Checks videos against the streams and crop; returns per-video columns.

  "index" is a video's position in `entries`.
  """
  for entry in entries:
    if not set(streams) <= set(entry.streams):
      raise sources.DatasetError(
          f"{info.cache_dir}: {entry.path} has streams {entry.streams}, not "
          f"{streams}; prepare the data with --streams={','.join(streams)}")
    try:
      preprocess.check_crop_fits(crop_size, min(entry.height, entry.width))
    except ValueError as e:
      raise sources.DatasetError(f"{info.cache_dir}: {entry.path} "
                                 f"({entry.height}x{entry.width}): {e}") from e
  columns = {
      "index": list(range(len(entries))),
      "label": [e.label_index for e in entries],
      "video_frames": [e.video_frames for e in entries],
      "height": [e.height for e in entries],
      "width": [e.width for e in entries],
  }
  for stream in streams:
    columns[f"{stream}_path"] = [info.stream_path(e, stream) for e in entries]
  return columns


def _per_video_dataset(columns: dict[str, list[Any]]) -> tf.data.Dataset:
  """One element per video: stream file paths as strings, the rest int32."""
  return tf.data.Dataset.from_tensor_slices({
      name:
          tf.constant(values, tf.string if name.endswith("_path") else tf.int32)
      for name, values in columns.items()
  })


def _augmented_clip(element: dict[str, tf.Tensor], element_seed: tf.Tensor,
                    streams: Sequence[str], num_frames: int,
                    crop_size: int) -> dict[str, tf.Tensor]:
  """One training clip of a video, its augmentation drawn from a seed.

  The start is uniform (a video shorter than the clip starts at 0 and loops),
  the crop position uniform, the mirror a coin flip; the streams share them.
  """
  seeds = [
      tf.stack([element_seed, tf.constant(i, tf.int64)]) for i in range(4)
  ]
  total = element["video_frames"]

  def uniform_below(limit: tf.Tensor, draw: int) -> tf.Tensor:
    return tf.random.stateless_uniform(
        [], seeds[draw], minval=0, maxval=limit, dtype=tf.int32)

  start = uniform_below(tf.maximum(total - num_frames, 0) + 1, 0)
  top = uniform_below(element["height"] - crop_size + 1, 1)
  left = uniform_below(element["width"] - crop_size + 1, 2)
  mirror = tf.random.stateless_uniform([], seeds[3]) < 0.5
  indices = clip_frame_indices(start, num_frames, total)
  clip = {"label": element["label"], "index": element["index"]}
  for stream in streams:
    frames = _frames_at(element[f"{stream}_path"], stream, indices)
    frames = frames[:, top:top + crop_size, left:left + crop_size]
    frames = tf.cond(
        mirror,
        lambda f=frames, s=stream: _flip_horizontally(f, s),
        lambda f=frames: f)
    frames.set_shape([num_frames, crop_size, crop_size,
                      streams_lib.CHANNELS[stream]])
    clip[stream] = frames
  return clip


def make_train_dataset(cache_dir: str,
                       split: str = "train",
                       streams: Sequence[str] = streams_lib.STREAMS,
                       num_frames: int = 64,
                       crop_size: int = 224,
                       batch_size: int = 8,
                       seed: int | None = None,
                       repeat: bool | int = True) -> tf.data.Dataset:
  """Training clips from a prepared cache, shuffled and augmented.

  Each clip starts at a random frame (videos shorter than `num_frames` start
  at frame 0 and loop, see `clip_frame_indices`), is cropped at a random
  position and mirrored with probability 1/2; RGB and flow share the start,
  crop and mirror, and a mirror negates flow x. Only the frames of the clip
  are decoded, only for the streams asked for.

  Args:
    cache_dir: a prepared cache.
    split: the split to read.
    streams: a subset of the cached streams.
    num_frames: frames per clip (64 in the paper).
    crop_size: side of the square crop.
    batch_size: clips per batch.
    seed: seeds the shuffle and the augmentation; None for a random seed.
    repeat: True repeats forever (batches then all have `batch_size`
      clips); an integer n makes n passes over the split (each reshuffled, as
      the first n of the endless dataset), False one; the last batch of a
      finite dataset may be smaller. A finite dataset ends by itself: cutting
      an endless one with `take` leaves clips in flight to cancel, which has
      cost tens of seconds at the end of a feature extraction.

  Returns:
    A dataset of dicts: "rgb" float32 [B, num_frames, crop, crop, 3] and/or
    "flow" float32 [B, num_frames, crop, crop, 2] in [-1, 1], "label" int32
    [B], "index" int32 [B] (position of the video in the split).

  Raises:
    DatasetError: if the cache, split, streams or crop do not fit.
  """
  streams = streams_lib.parse_streams(streams)
  entries, columns = _split_source(cache_dir, split, streams, crop_size)

  dataset = _per_video_dataset(columns)
  dataset = dataset.shuffle(
      len(entries), seed=seed, reshuffle_each_iteration=True)
  endless = repeat is True
  if endless:
    dataset = dataset.repeat()
  elif repeat > 1:
    dataset = dataset.repeat(repeat)
  dataset = tf.data.Dataset.zip((dataset, tf.data.Dataset.random(seed=seed)))
  dataset = dataset.map(
      lambda element, element_seed: _augmented_clip(
          element, element_seed, streams, num_frames, crop_size),
      num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.batch(batch_size, drop_remainder=endless)
  return dataset.prefetch(tf.data.AUTOTUNE)


def video_seed(entry: cache.CacheEntry) -> int:
  """A seed in [0, 2**28) from a video's cache key (a hex content hash)."""
  return int(entry.key[:7], 16)


def make_feature_views_dataset(info: cache.CacheInfo,
                               entries: Sequence[cache.CacheEntry],
                               streams: Sequence[str] = streams_lib.STREAMS,
                               num_frames: int = 64,
                               crop_size: int = 224,
                               num_views: int = 8,
                               seed: int = 0,
                               batch_size: int = 8) -> tf.data.Dataset:
  """`num_views` augmented training clips of each video, once, in order.

  View v of a video is augmented as `make_train_dataset` augments a clip,
  from a seed made of `seed`, the video's content key and v: the same
  whichever other videos come with it, so the frozen features of a view can
  be cached per video and shared by every training set that holds the video
  (e.g. the folds of a cross-validation). The pipeline is finite, so it ends
  by itself with nothing in flight to cancel.

  Args:
    info: the cache (`cache.read_cache`).
    entries: the videos, some of `info.entries`.
    streams: a subset of the cached streams.
    num_frames: frames per clip.
    crop_size: side of the square crop.
    num_views: clips per video.
    seed: the run's seed.
    batch_size: clips per batch; the last batch may be smaller.

  Returns:
    Batches, video-major (the views of entries[0], then of entries[1], ...):
    "rgb" float32 [B, num_frames, crop, crop, 3] and/or "flow" float32
    [B, num_frames, crop, crop, 2] in [-1, 1], "label" int32 [B], "index"
    int32 [B] (position in `entries`) and "view" int64 [B].

  Raises:
    DatasetError: if the streams or crop do not fit the videos.
  """
  streams = streams_lib.parse_streams(streams)
  columns = _entry_columns(info, entries, streams, crop_size)
  columns["video_seed"] = [video_seed(e) for e in entries]

  def make_view(element: dict[str, tf.Tensor],
                view: tf.Tensor) -> dict[str, tf.Tensor]:
    element_seed = ((tf.cast(element["video_seed"], tf.int64) * 4096 +
                     view) * 65537 + seed)
    clip = _augmented_clip(element, element_seed, streams, num_frames,
                           crop_size)
    clip["view"] = view
    return clip

  dataset = _per_video_dataset(columns).flat_map(
      lambda element: tf.data.Dataset.zip((
          tf.data.Dataset.from_tensors(element).repeat(num_views),
          tf.data.Dataset.range(num_views))))
  dataset = dataset.map(make_view, num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def evenly_spaced_starts(total: int, num_frames: int,
                         num_clips: int) -> list[int]:
  """Starts of `num_clips` clips at the centres of equal parts of the video.

  One clip is the centre clip; clips of a video shorter than `num_frames` all
  start at 0 (and loop).
  """
  slack = max(total - num_frames, 0)
  return [slack * (2 * i + 1) // (2 * num_clips) for i in range(num_clips)]


def make_eval_dataset(cache_dir: str,
                      split: str = "eval",
                      streams: Sequence[str] = streams_lib.STREAMS,
                      num_frames: int | None = None,
                      crop_size: int = 224,
                      num_clips: int = 1,
                      num_crops: int = 1,
                      window: int = preprocess.MAX_CLIP_FRAMES,
                      windows_per_batch: int = 1) -> tf.data.Dataset:
  """Evaluation views of each video of a split, in split order.

  Views are `num_clips` evenly spaced clips (see `evenly_spaced_starts`;
  short videos loop) times `num_crops` crops (1: centre; 3: start, centre and
  end of the longer side), clip-major: view v is clip v // num_crops, crop
  v % num_crops.

  Whole videos (`num_frames` None) are cut into consecutive clips of `window`
  frames covering every frame (`preprocess.clip_windows`; a video of up to
  `window` frames is one clip), so that memory holds a few clips however long
  the video: each element then holds `windows_per_batch` of a video's clips
  (fewer in its last element), and a video spans several elements, which
  consumers average over (see `i3d.eval.evaluate.evaluate_model`).

  Args:
    cache_dir: a prepared cache.
    split: the split to read.
    streams: a subset of the cached streams.
    num_frames: frames per clip; None for the whole video (then num_clips
      must be 1).
    crop_size: side of the square crops.
    num_clips: clips per video.
    num_crops: 1 or 3.
    window: frames per clip of a whole video.
    windows_per_batch: clips of a whole video per element.

  Returns:
    A dataset of elements with "rgb" float32 [V, T, crop, crop, 3] and/or
    "flow" float32 [V, T, crop, crop, 2], "label" and "index" int32 scalars.
    With `num_frames`: one element per video, V = num_clips * num_crops, T =
    num_frames. Whole videos: V = (clips in the element) * num_crops, T =
    min(window, the video's length), elements of a video consecutive.

  Raises:
    DatasetError: if the cache, split, streams or crop do not fit.
    ValueError: for num_crops other than 1 or 3, num_clips < 1, several
      clips of whole videos, or a window or windows_per_batch below 1.
  """
  info = cache.read_cache(cache_dir)
  return make_eval_views(info, _nonempty_split(info, split), streams,
                         num_frames, crop_size, num_clips, num_crops, window,
                         windows_per_batch)


def make_eval_views(info: cache.CacheInfo,
                    entries: Sequence[cache.CacheEntry],
                    streams: Sequence[str] = streams_lib.STREAMS,
                    num_frames: int | None = None,
                    crop_size: int = 224,
                    num_clips: int = 1,
                    num_crops: int = 1,
                    window: int = preprocess.MAX_CLIP_FRAMES,
                    windows_per_batch: int = 1) -> tf.data.Dataset:
  """Evaluation views of the given videos, in order (see make_eval_dataset).

  Args:
    info: the cache (`cache.read_cache`).
    entries: the videos, some of `info.entries`; "index" is the position in
      it.
    streams, num_frames, crop_size, num_clips, num_crops, window,
      windows_per_batch: as for `make_eval_dataset`.

  Returns:
    Elements as `make_eval_dataset`'s (a whole video longer than `window`
    spans several).

  Raises:
    DatasetError: if the streams or crop do not fit.
    ValueError: for impossible views.
  """
  streams = streams_lib.parse_streams(streams)
  if num_clips < 1 or (num_frames is None and num_clips != 1):
    raise ValueError(
        f"num_clips must be >= 1, and 1 for whole videos; got {num_clips}")
  if window < 1 or windows_per_batch < 1:
    raise ValueError(f"window and windows_per_batch must be >= 1, got "
                     f"{window} and {windows_per_batch}")
  columns = _entry_columns(info, entries, streams, crop_size)
  columns["clip_starts"] = [
      evenly_spaced_starts(e.video_frames, num_frames or e.video_frames,
                           num_clips)
      for e in entries
  ]
  columns["crop_offsets"] = [
      preprocess.crop_offsets(e.height, e.width, crop_size, num_crops)
      for e in entries
  ]

  def crop_views(frames: tf.Tensor, offsets: tf.Tensor, clips: tf.Tensor,
                 length: tf.Tensor, stream: str) -> tf.Tensor:
    """[clips * length, H, W, C] -> [clips * num_crops, length, crop, crop, C]."""
    shape = tf.shape(frames)
    frames = tf.reshape(frames, tf.concat([[clips, length], shape[1:]], 0))
    crops = [
        frames[:, :, offset[0]:offset[0] + crop_size,
               offset[1]:offset[1] + crop_size]
        for offset in tf.unstack(offsets, num=num_crops)
    ]
    return tf.reshape(
        tf.stack(crops, axis=1),
        [clips * num_crops, length, crop_size, crop_size, streams_lib.CHANNELS[stream]])

  def make_views(element: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    total = element["video_frames"]
    length = total if num_frames is None else num_frames
    indices = clip_frame_indices(element["clip_starts"], length, total)
    views = {"label": element["label"], "index": element["index"]}
    for stream in streams:
      frames = _frames_at(element[f"{stream}_path"], stream,
                          tf.reshape(indices, [-1]))
      views[stream] = crop_views(frames, element["crop_offsets"], num_clips,
                                 length, stream)
      views[stream].set_shape([num_clips * num_crops, num_frames, crop_size,
                               crop_size, streams_lib.CHANNELS[stream]])
    return views

  def video_windows(element: dict[str, tf.Tensor]) -> tf.data.Dataset:
    """The clips of one whole video, `windows_per_batch` per element."""
    total = element["video_frames"]
    length = tf.minimum(total, window)
    # preprocess.clip_windows(total, length, length): every `length` frames,
    # the last clip aligned to the end.
    starts = tf.minimum(tf.range((total + length - 1) // length) * length,
                        total - length)
    # Each stream file is read once per video, its frames decoded per clip.
    encoded = {s: _read_encoded_frames(element[f"{s}_path"], s)
               for s in streams}

    def make_window_views(batch_starts: tf.Tensor) -> dict[str, tf.Tensor]:
      indices = clip_frame_indices(batch_starts, length, total)
      views = {"label": element["label"], "index": element["index"]}
      for stream in streams:
        frames = _decode_frames_at(encoded[stream], stream,
                                   tf.reshape(indices, [-1]))
        views[stream] = crop_views(frames, element["crop_offsets"],
                                   tf.size(batch_starts), length, stream)
        views[stream].set_shape([None, None, crop_size, crop_size,
                                 streams_lib.CHANNELS[stream]])
      return views

    return tf.data.Dataset.from_tensor_slices(starts).batch(
        windows_per_batch).map(make_window_views)

  dataset = _per_video_dataset(columns)
  if num_frames is None:
    # Several videos at once, each element kept in order within its video.
    dataset = dataset.interleave(
        video_windows, cycle_length=tf.data.AUTOTUNE,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  else:
    dataset = dataset.map(make_views, num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.prefetch(tf.data.AUTOTUNE)


def read_cached_video(info: cache.CacheInfo, entry: cache.CacheEntry,
                      stream: str) -> np.ndarray:
  """Decodes a whole cached stream, uncropped (for inspection and tests).

  Args:
    info: the cache, from `read_cache`.
    entry: one of its entries.
    stream: "rgb" or "flow".

  Returns:
    float32 [T, H, W, C] in [-1, 1], as the pipelines see it before cropping.
  """
  encoded = _read_encoded_frames(tf.constant(info.stream_path(entry, stream)),
                                 stream)
  return _decode_frames(encoded, stream).numpy()
