"""Prepared datasets: video discovery, the preprocessed cache, splits, tf.data.

Videos are found in a folder with one sub-folder per class, or listed in a
manifest CSV (`path,label[,subject][,split]`). `prepare_dataset` decodes each
video once, computes the streams asked for (`i3d.video` preprocessing) and
stores them JPEG-compressed in a cache directory:

  CACHE_DIR/
    metadata.json        classes, settings, the prepared entries, failures
    splits.json          {"method", "seed", "eval_fraction", "train", "eval"}
    videos/KEY.json      per-video record: frame count and size (commit marker)
    videos/KEY.rgb.pb    tf.train.SequenceExample, feature list "rgb/encoded":
                         one RGB JPEG per frame
    videos/KEY.flow.pb   feature list "flow/encoded": one grayscale JPEG per
                         frame holding x above y, quantised as
                         round(127 * flow + 128) (`video.encode_flow_jpeg`)

KEY is a hash of the video file's content and the preprocessing settings, so
a rerun skips what is done, renamed files are not recomputed, and changed
settings do not reuse stale entries. Every file is written to a temporary name
and renamed; the per-video record is written last, so an interrupted run leaves
no entry that looks complete but is not.

`make_train_dataset` and `make_eval_dataset` read the cache with tf.data.
"""

import collections
import concurrent.futures
import contextlib
import csv
import dataclasses
import fcntl
import glob
import hashlib
import json
import os
import time
from typing import Any, Iterable, Iterator, Sequence

from absl import logging
import numpy as np
import tensorflow as tf

from i3d import fileio
from i3d.video import flow
from i3d import labels
from i3d.video import preprocess as video

VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".3gp",
    ".wmv", ".flv")
SPLITS: tuple[str, ...] = ("train", "eval")
METADATA_FILE = "metadata.json"
SPLITS_FILE = "splits.json"
# Part of every entry key: bump when the stored format changes.
CACHE_FORMAT_VERSION = 1

_VIDEOS_DIR = "videos"
_LOCK_FILE = ".prepare.lock"
_HASH_CHUNK_BYTES = 1 << 20
_PROGRESS_INTERVAL_S = 5.0
_CHANNELS = {"rgb": 3, "flow": 2}


class DatasetError(ValueError):
  """A dataset that cannot be prepared or read as given (not a single video)."""


@dataclasses.dataclass(frozen=True)
class VideoSource:
  """A video to prepare.

  Attributes:
    path: absolute path of the file.
    relpath: path relative to the data root (data_dir or the manifest's
      folder); identifies the video in the cache metadata and the splits.
    label: class name.
    subject: the person filmed, when the manifest says; None otherwise.
    split: "train" or "eval" when the manifest fixes it; None otherwise.
  """
  path: str
  relpath: str
  label: str
  subject: str | None = None
  split: str | None = None


@dataclasses.dataclass(frozen=True)
class Failure:
  """A video that could not be prepared: the file and the reason."""
  path: str
  reason: str

  def __str__(self) -> str:
    return f"{self.path}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class Discovery:
  """The videos of a dataset.

  Attributes:
    root: the folder relative paths are relative to.
    classes: class names in logit order.
    sources: the videos found, sorted by relative path.
    failures: listed videos that cannot be used (missing, outside the root).
  """
  root: str
  classes: tuple[str, ...]
  sources: tuple[VideoSource, ...]
  failures: tuple[Failure, ...]


@dataclasses.dataclass(frozen=True)
class PrepareReport:
  """What `prepare_dataset` did.

  Attributes:
    cache_dir: the cache directory.
    num_videos: videos found or listed.
    num_prepared: videos preprocessed by this run.
    num_cached: videos found already prepared and skipped.
    failures: videos that could not be prepared, with reasons.
    elapsed_s: wall time of the run.
  """
  cache_dir: str
  num_videos: int
  num_prepared: int
  num_cached: int
  failures: tuple[Failure, ...]
  elapsed_s: float

  @property
  def ok(self) -> bool:
    """True when every video was prepared."""
    return not self.failures

  def summary(self) -> str:
    """Returns a readable summary, one line per failed video."""
    lines = [
        f"{self.num_prepared + self.num_cached} of {self.num_videos} videos "
        f"ready in {self.cache_dir} ({self.num_prepared} prepared now, "
        f"{self.num_cached} already cached, {len(self.failures)} failed) in "
        f"{_format_duration(self.elapsed_s)}"
    ]
    if self.failures:
      lines.append(f"{len(self.failures)} video(s) failed:")
      lines.extend(f"  {failure}" for failure in self.failures)
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class CacheEntry:
  """A prepared video.

  Attributes:
    path: path relative to the data root, as in the splits.
    label: class name.
    label_index: position of the label in the class list.
    subject: the person filmed, if known.
    key: the cache key (content hash and settings).
    num_frames: frames at the prepared frame rate.
    height: frame height in pixels.
    width: frame width in pixels.
    streams: the streams stored for this video.
  """
  path: str
  label: str
  label_index: int
  subject: str | None
  key: str
  num_frames: int
  height: int
  width: int
  streams: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class CacheInfo:
  """The metadata of a prepared cache.

  Attributes:
    cache_dir: the cache directory.
    root: the data root the entries' paths are relative to.
    classes: class names in logit order.
    config: the preprocessing settings.
    entries: the prepared videos, sorted by path.
    splits: split name -> entry paths.
    failures: videos the last preparation could not use.
  """
  cache_dir: str
  root: str
  classes: tuple[str, ...]
  config: video.PreprocessConfig
  entries: tuple[CacheEntry, ...]
  splits: dict[str, tuple[str, ...]]
  failures: tuple[Failure, ...]

  @property
  def streams(self) -> tuple[str, ...]:
    """The streams stored for every entry."""
    return tuple(s for s in video.STREAMS
                 if all(s in entry.streams for entry in self.entries))

  def split_entries(self, split: str) -> list[CacheEntry]:
    """Returns the entries of a split, in split order (their "index").

    Raises:
      DatasetError: if the split is unknown.
    """
    if split not in self.splits:
      raise DatasetError(
          f"{self.cache_dir}: no split {split!r} (splits: "
          f"{', '.join(self.splits)})")
    by_path = {entry.path: entry for entry in self.entries}
    return [by_path[path] for path in self.splits[split]]

  def stream_path(self, entry: CacheEntry, stream: str) -> str:
    """Returns the file holding one stream of an entry."""
    return _stream_path(os.path.join(self.cache_dir, _VIDEOS_DIR), entry.key,
                        stream)


def _format_duration(seconds: float) -> str:
  minutes, seconds = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  if hours:
    return f"{hours}h{minutes:02d}m{seconds:02d}s"
  return f"{minutes}m{seconds:02d}s"


# ---------------------------------------------------------------------------
# Discovery.


def _scan_data_dir(data_dir: str, classes: Sequence[str]) -> list[VideoSource]:
  """Lists the videos of a folder with one sub-folder per class."""
  if not os.path.isdir(data_dir):
    raise DatasetError(f"{data_dir}: data_dir is not a directory")
  root = os.path.abspath(data_dir)
  sources = []
  ignored = []
  for name in sorted(os.listdir(root)):
    class_dir = os.path.join(root, name)
    if name.startswith(".") or not os.path.isdir(class_dir):
      continue
    if name not in classes:
      raise DatasetError(
          f"{class_dir}: folder name {name!r} is not a class (classes: "
          f"{', '.join(classes)}); pass --classes or move the folder")
    for directory, subdirs, filenames in os.walk(class_dir):
      subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
      for filename in sorted(filenames):
        path = os.path.join(directory, filename)
        if filename.startswith("."):
          continue
        if not filename.lower().endswith(VIDEO_EXTENSIONS):
          ignored.append(path)
          continue
        sources.append(
            VideoSource(path=path, relpath=os.path.relpath(path, root),
                        label=name))
  if ignored:
    logging.warning("Ignored %d file(s) without a video extension, e.g. %s",
                    len(ignored), ignored[0])
  return sources


def _read_manifest(
    manifest: str,
    classes: Sequence[str]) -> tuple[list[VideoSource], list[Failure]]:
  """Reads a manifest CSV with columns path,label[,subject][,split]."""
  if not os.path.isfile(manifest):
    raise DatasetError(f"{manifest}: manifest not found")
  root = os.path.dirname(os.path.abspath(manifest))
  with open(manifest, newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f, skipinitialspace=True))
    columns = set(rows[0]) if rows else set()
  missing_columns = {"path", "label"} - columns
  if not rows or missing_columns:
    raise DatasetError(
        f"{manifest}: expected a header line with columns path,label"
        "[,subject][,split] and at least one row")
  has_split = "split" in columns
  sources, failures = [], []
  first_line_of = {}
  # Line 1 is the header.
  for line, row in enumerate(rows, start=2):
    where = f"{manifest}:{line}"
    value = {k: (row.get(k) or "").strip()
             for k in ("path", "label", "subject", "split")}
    if not value["path"] or not value["label"]:
      raise DatasetError(f"{where}: empty path or label")
    if value["label"] not in classes:
      raise DatasetError(
          f"{where}: unknown label {value['label']!r} for {value['path']} "
          f"(classes: {', '.join(classes)})")
    if has_split and value["split"] not in SPLITS:
      raise DatasetError(
          f"{where}: split must be one of {', '.join(SPLITS)} when the split "
          f"column is present, got {value['split']!r}")
    path = os.path.normpath(os.path.join(root, value["path"]))
    if os.path.commonpath([root, path]) != root:
      failures.append(Failure(
          path, f"escapes the manifest's folder {root} (written "
          f"{value['path']!r} on line {line})"))
      continue
    if path in first_line_of:
      raise DatasetError(
          f"{where}: {value['path']} is listed twice (also on line "
          f"{first_line_of[path]})")
    first_line_of[path] = line
    if not os.path.isfile(path):
      failures.append(Failure(path, f"listed on {where} but not found"))
      continue
    sources.append(VideoSource(
        path=path, relpath=os.path.relpath(path, root), label=value["label"],
        subject=value["subject"] or None, split=value["split"] or None))
  return sources, failures


def discover_videos(data_dir: str | None = None,
                    manifest: str | None = None,
                    classes: str | Sequence[str] | None = None) -> Discovery:
  """Finds the videos of a dataset and checks their labels.

  Args:
    data_dir: a folder with one sub-folder per class (searched recursively for
      files with a video extension; hidden files are skipped).
    manifest: a CSV file with a header and columns `path,label` and optionally
      `subject` and `split` ("train" or "eval", then on every row). Relative
      paths are relative to the manifest's folder; a path outside that folder
      is reported as a failure.
    classes: the class list (see `labels.resolve_classes`); None for the
      exercise classes.

  Returns:
    The videos found, sorted by relative path, and the listed videos that
    cannot be used.

  Raises:
    DatasetError: if not exactly one of data_dir and manifest is given, for an
      unknown label or class folder, a malformed manifest, a video listed
      twice, or when no video is found.
  """
  if (data_dir is None) == (manifest is None):
    raise DatasetError("give exactly one of data_dir and manifest")
  try:
    class_names = tuple(labels.resolve_classes(classes))
  except ValueError as e:
    raise DatasetError(str(e)) from e
  if data_dir is not None:
    root = os.path.abspath(data_dir)
    sources, failures = _scan_data_dir(data_dir, class_names), []
  else:
    root = os.path.dirname(os.path.abspath(manifest))
    sources, failures = _read_manifest(manifest, class_names)
  if not sources and not failures:
    raise DatasetError(f"{data_dir or manifest}: no videos found")
  missing = sorted(set(class_names) - {s.label for s in sources})
  if missing:
    logging.warning("No videos for class(es): %s", ", ".join(missing))
  return Discovery(root=root, classes=class_names,
                   sources=tuple(sorted(sources, key=lambda s: s.relpath)),
                   failures=tuple(failures))


# ---------------------------------------------------------------------------
# Splits.


def _check_eval_fraction(eval_fraction: float) -> None:
  if not 0 <= eval_fraction < 1:
    raise DatasetError(f"eval_fraction must be in [0, 1), got {eval_fraction}")


def split_videos(sources: Sequence[VideoSource], eval_fraction: float,
                 seed: int) -> dict[str, Any]:
  """Splits videos into "train" and "eval", deterministically for a seed.

  - If the manifest gave splits, they are used as they are.
  - Else if subjects are known, whole subjects go to eval (in a seeded random
    order) until it holds `eval_fraction` of the videos, so no person is in
    both splits. Videos without a subject count as subjects of their own.
  - Else each class is split on its own (stratified), `eval_fraction` of its
    videos rounded, at least one each way for classes with two or more.

  Args:
    sources: the videos.
    eval_fraction: the fraction of videos for evaluation, in [0, 1).
    seed: the random seed.

  Returns:
    A JSON-ready dict: "method" ("manifest", "subject" or "stratified"),
    "seed", "eval_fraction", and "train" and "eval", each a sorted list of
    relative paths.

  Raises:
    DatasetError: if eval_fraction is outside [0, 1).
  """
  _check_eval_fraction(eval_fraction)
  rng = np.random.default_rng(seed)
  ordered = sorted(sources, key=lambda s: s.relpath)
  if any(s.split for s in ordered):
    method = "manifest"
    eval_paths = {s.relpath for s in ordered if s.split == "eval"}
  elif any(s.subject for s in ordered):
    method = "subject"
    groups = collections.defaultdict(list)
    for s in ordered:
      groups[s.subject or f"video:{s.relpath}"].append(s.relpath)
    names = sorted(groups)
    eval_paths = set()
    target = eval_fraction * len(ordered)
    # Stop before the last group, so that train is never empty.
    for name in [names[i] for i in rng.permutation(len(names))][:-1]:
      if len(eval_paths) >= target:
        break
      eval_paths.update(groups[name])
  else:
    method = "stratified"
    eval_paths = set()
    for label in sorted({s.label for s in ordered}):
      paths = [s.relpath for s in ordered if s.label == label]
      num_eval = round(eval_fraction * len(paths))
      if eval_fraction > 0 and len(paths) >= 2:
        num_eval = min(max(num_eval, 1), len(paths) - 1)
      eval_paths.update(
          paths[i] for i in rng.permutation(len(paths))[:num_eval])
  return {
      "method": method,
      "seed": seed,
      "eval_fraction": eval_fraction,
      "train": [s.relpath for s in ordered if s.relpath not in eval_paths],
      "eval": [s.relpath for s in ordered if s.relpath in eval_paths],
  }


# ---------------------------------------------------------------------------
# Preparation.


@dataclasses.dataclass(frozen=True)
class _Task:
  """A video whose entry lacks some streams."""
  source: VideoSource
  content_sha256: str
  key: str
  streams: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _Outcome:
  """What happened to one video: its entry record, or the reason it failed."""
  source: VideoSource
  record: dict[str, Any] | None = None
  streams: tuple[str, ...] = ()
  cached: bool = False
  error: str | None = None


def _file_size(path: str) -> int:
  """Returns a file's size; 0 if it cannot be read (reported later)."""
  try:
    return os.path.getsize(path)
  except OSError:
    return 0


def _file_sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(_HASH_CHUNK_BYTES), b""):
      digest.update(chunk)
  return digest.hexdigest()


def _entry_key(content_sha256: str, config: video.PreprocessConfig) -> str:
  settings = (f"{config.fingerprint()}/{CACHE_FORMAT_VERSION}/"
              f"{video.RGB_JPEG_QUALITY}/{video.FLOW_JPEG_QUALITY}")
  settings_hash = hashlib.sha256(settings.encode("utf-8")).hexdigest()[:12]
  return f"{content_sha256[:32]}-{settings_hash}"


def _record_path(videos_dir: str, key: str) -> str:
  return os.path.join(videos_dir, f"{key}.json")


def _stream_path(videos_dir: str, key: str, stream: str) -> str:
  return os.path.join(videos_dir, f"{key}.{stream}.pb")


def _stored_streams(videos_dir: str, key: str) -> tuple[str, ...]:
  """Returns the streams stored for a key; none without the entry record."""
  if not os.path.isfile(_record_path(videos_dir, key)):
    return ()
  return tuple(s for s in video.STREAMS
               if os.path.isfile(_stream_path(videos_dir, key, s)))


def _sequence_example(stream: str, encoded: video.EncodedVideo) -> bytes:
  example = tf.train.SequenceExample()
  context = example.context.feature
  context["num_frames"].int64_list.value.append(encoded.num_frames)
  context["height"].int64_list.value.append(encoded.height)
  context["width"].int64_list.value.append(encoded.width)
  feature_list = example.feature_lists.feature_list[f"{stream}/encoded"]
  for data in encoded.frames[stream]:
    feature_list.feature.add().bytes_list.value.append(data)
  return example.SerializeToString()


def _write_entry(videos_dir: str, task: _Task, encoded: video.EncodedVideo,
                 config: video.PreprocessConfig) -> dict[str, Any]:
  """Writes the streams of a video, then its record, each atomically."""
  for stream in encoded.frames:
    fileio.write_bytes(_stream_path(videos_dir, task.key, stream),
                       _sequence_example(stream, encoded))
  record = {
      "key": task.key,
      "sha256": task.content_sha256,
      "settings": config.to_dict(),
      "num_frames": encoded.num_frames,
      "height": encoded.height,
      "width": encoded.width,
  }
  # Written last: the record marks the entry's stream files as complete.
  fileio.write_json(_record_path(videos_dir, task.key), record)
  return record


def _failure_reason(error: Exception) -> str:
  """Describes why a video could not be encoded."""
  if isinstance(error, video.VideoError):
    return error.reason
  # One odd file (an OpenCV or codec error, a dead worker) must not stop the
  # others; the type is kept in the reason for a bug report.
  return f"unexpected {type(error).__name__}: {error}"


def _encode_videos(
    tasks: Sequence[_Task], config: video.PreprocessConfig, num_workers: int
) -> Iterator[tuple[_Task, video.EncodedVideo | None, str | None]]:
  """Encodes videos in this process or in worker processes, as they finish.

  Yields:
    (task, encoded video, None) or (task, None, reason of the failure).
  """
  if num_workers <= 1 or len(tasks) <= 1:
    for task in tasks:
      try:
        encoded, error = video.encode_video(task.source.path, task.streams,
                                            config), None
      except Exception as e:  # pylint: disable=broad-except
        encoded, error = None, _failure_reason(e)
      yield task, encoded, error
    return
  # The workers run `video.encode_video`, which needs OpenCV and NumPy only.
  pool = concurrent.futures.ProcessPoolExecutor(
      min(num_workers, len(tasks)), mp_context=flow.worker_context(),
      initializer=flow.use_one_opencv_thread)
  try:
    futures = {
        pool.submit(video.encode_video, task.source.path, task.streams, config):
            task for task in tasks
    }
    for future in concurrent.futures.as_completed(futures):
      try:
        encoded, error = future.result(), None
      except Exception as e:  # pylint: disable=broad-except
        encoded, error = None, _failure_reason(e)
      yield futures[future], encoded, error
  finally:
    # On an interruption, do not start the videos still queued.
    pool.shutdown(cancel_futures=True)


class _Progress:
  """Logs progress with an ETA at most every few seconds."""

  def __init__(self, total: int):
    self._total = total
    self._start = time.monotonic()
    self._last_log = self._start
    self._done = 0
    self._cached = 0
    self._failed = 0

  def update(self, outcome: _Outcome) -> None:
    self._done += 1
    self._cached += outcome.cached
    self._failed += outcome.error is not None
    now = time.monotonic()
    if now - self._last_log < _PROGRESS_INTERVAL_S and self._done < self._total:
      return
    self._last_log = now
    elapsed = now - self._start
    # Cached videos take no time: the rate counts the videos really processed.
    processed = self._done - self._cached
    remaining = self._total - self._done
    eta = elapsed / processed * remaining if processed else 0.0
    logging.info(
        "Prepared %d/%d videos (%.0f%%; %d cached, %d failed), elapsed %s, "
        "ETA %s", self._done, self._total, 100.0 * self._done / self._total,
        self._cached, self._failed, _format_duration(elapsed),
        _format_duration(eta))


@contextlib.contextmanager
def _exclusive_lock(cache_dir: str) -> Iterator[None]:
  """Holds an advisory lock on the cache, released even on kill -9."""
  with open(os.path.join(cache_dir, _LOCK_FILE), "a") as lock_file:
    try:
      fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
      raise DatasetError(
          f"{cache_dir}: another preparation is writing to this cache") from e
    yield


def _remove_temporary_files(directories: Iterable[str]) -> None:
  """Removes the temporary files of an interrupted run (see fileio)."""
  leftovers = [
      p for d in directories for p in glob.glob(os.path.join(d, ".*.tmp"))
  ]
  for path in leftovers:
    os.remove(path)
  if leftovers:
    logging.info("Removed %d temporary file(s) of an interrupted run",
                 len(leftovers))


def _plan(sources: Sequence[VideoSource], videos_dir: str,
          streams: Sequence[str], config: video.PreprocessConfig,
          progress: _Progress) -> tuple[list[_Outcome], list[_Task]]:
  """Hashes the videos; returns the ones already cached and the work to do."""
  outcomes, tasks = [], []
  for source in sources:
    try:
      content_sha256 = _file_sha256(source.path)
    except OSError as e:
      outcomes.append(_Outcome(source, error=f"cannot read: {e.strerror}"))
      progress.update(outcomes[-1])
      continue
    key = _entry_key(content_sha256, config)
    stored = _stored_streams(videos_dir, key)
    missing = tuple(s for s in streams if s not in stored)
    if missing:
      tasks.append(_Task(source, content_sha256, key, missing))
      continue
    with open(_record_path(videos_dir, key), encoding="utf-8") as f:
      outcomes.append(_Outcome(source, json.load(f), stored, cached=True))
    progress.update(outcomes[-1])
  return outcomes, tasks


def prepare_dataset(cache_dir: str,
                    data_dir: str | None = None,
                    manifest: str | None = None,
                    classes: str | Sequence[str] | None = None,
                    streams: Sequence[str] = video.STREAMS,
                    config: video.PreprocessConfig = video.PreprocessConfig(),
                    num_workers: int = 1,
                    eval_fraction: float = 0.2,
                    seed: int = 0) -> PrepareReport:
  """Preprocesses a dataset's videos into a cache, with splits.

  Each video is decoded once and only the streams asked for are computed,
  in `num_workers` processes. Videos already in the cache with the same
  content and settings are skipped. Videos that fail are reported with the
  reason, and the others are prepared. `metadata.json` and `splits.json` are
  rewritten at the end to describe the videos prepared with these settings.

  Args:
    cache_dir: the cache directory (created if needed). One preparation at a
      time may write to it.
    data_dir: a folder with one sub-folder per class; or
    manifest: a CSV file (see `discover_videos`).
    classes: the class list (see `labels.resolve_classes`); None for the
      exercise classes.
    streams: a subset of ("rgb", "flow").
    config: the preprocessing settings.
    num_workers: processes preparing videos in parallel.
    eval_fraction: fraction of videos in the eval split (see `split_videos`).
    seed: seed of the split.

  Returns:
    A report: counts, failures with reasons, time taken.

  Raises:
    DatasetError: for a dataset that cannot be read as given (see
      `discover_videos`), or when another preparation holds the cache.
  """
  streams = video.validate_streams(streams)
  _check_eval_fraction(eval_fraction)  # Before hours of work, not after.
  start = time.monotonic()
  discovery = discover_videos(data_dir, manifest, classes)
  videos_dir = os.path.join(cache_dir, _VIDEOS_DIR)
  os.makedirs(videos_dir, exist_ok=True)
  # Longest files first, so that one long video does not finish last alone.
  sources = sorted(discovery.sources, key=lambda s: -_file_size(s.path))
  logging.info("Preparing %d videos (%s) with %s in %d worker(s)",
               len(sources), "+".join(streams), config, num_workers)
  with _exclusive_lock(cache_dir):
    _remove_temporary_files([cache_dir, videos_dir])
    progress = _Progress(len(sources))
    outcomes, tasks = _plan(sources, videos_dir, streams, config, progress)
    for task, encoded, error in _encode_videos(tasks, config, num_workers):
      if error is None:
        record = _write_entry(videos_dir, task, encoded, config)
        outcome = _Outcome(task.source, record,
                           _stored_streams(videos_dir, task.key))
      else:
        logging.warning("%s: %s", task.source.path, error)
        outcome = _Outcome(task.source, error=error)
      outcomes.append(outcome)
      progress.update(outcome)
    outcomes.sort(key=lambda o: o.source.relpath)
    succeeded = [o for o in outcomes if o.error is None]
    failures = tuple(discovery.failures) + tuple(
        Failure(o.source.path, o.error) for o in outcomes if o.error)
    _warn_about_duplicates(succeeded)
    splits = split_videos([o.source for o in succeeded], eval_fraction, seed)
    fileio.write_json(os.path.join(cache_dir, SPLITS_FILE), splits)
    fileio.write_json(os.path.join(cache_dir, METADATA_FILE), {
        "format_version": CACHE_FORMAT_VERSION,
        "root": discovery.root,
        "classes": list(discovery.classes),
        "settings": config.to_dict(),
        "entries": [_entry_json(o, discovery.classes) for o in succeeded],
        "failures": [dataclasses.asdict(f) for f in failures],
    })
  report = PrepareReport(
      cache_dir=cache_dir,
      num_videos=len(discovery.sources) + len(discovery.failures),
      num_prepared=sum(not o.cached for o in succeeded),
      num_cached=sum(o.cached for o in succeeded),
      failures=failures,
      elapsed_s=time.monotonic() - start)
  (logging.info if report.ok else logging.warning)("%s", report.summary())
  return report


def _entry_json(outcome: _Outcome, classes: Sequence[str]) -> dict[str, Any]:
  source, record = outcome.source, outcome.record
  return {
      "path": source.relpath,
      "label": source.label,
      "label_index": classes.index(source.label),
      "subject": source.subject,
      "key": record["key"],
      "num_frames": record["num_frames"],
      "height": record["height"],
      "width": record["width"],
      "streams": list(outcome.streams),
  }


def _warn_about_duplicates(outcomes: Sequence[_Outcome]) -> None:
  """Warns about identical files: in both splits they would leak eval data."""
  paths_by_key = collections.defaultdict(list)
  for outcome in outcomes:
    paths_by_key[outcome.record["key"]].append(outcome.source.relpath)
  for paths in paths_by_key.values():
    if len(paths) > 1:
      logging.warning("Identical video content: %s", ", ".join(paths))


def read_cache(cache_dir: str) -> CacheInfo:
  """Reads the metadata and splits of a prepared cache.

  Args:
    cache_dir: a directory written by `prepare_dataset`.

  Returns:
    The cache's classes, settings, entries, splits and failures.

  Raises:
    DatasetError: if the directory holds no prepared dataset, or its splits do
      not match its entries (an interrupted preparation: run it again).
  """
  metadata_path = os.path.join(cache_dir, METADATA_FILE)
  if not os.path.isfile(metadata_path):
    raise DatasetError(
        f"{cache_dir}: not a prepared dataset (no {METADATA_FILE}); run "
        "prepare_data.py first")
  with open(metadata_path, encoding="utf-8") as f:
    metadata = json.load(f)
  with open(os.path.join(cache_dir, SPLITS_FILE), encoding="utf-8") as f:
    splits = json.load(f)
  entries = tuple(
      CacheEntry(**{**e, "streams": tuple(e["streams"])})
      for e in metadata["entries"])
  known_paths = {e.path for e in entries}
  split_paths = {name: tuple(splits[name]) for name in SPLITS}
  unknown = sorted(set().union(*split_paths.values()) - known_paths)
  if unknown:
    raise DatasetError(
        f"{cache_dir}: {SPLITS_FILE} names videos that are not prepared "
        f"(e.g. {unknown[0]}); run the preparation again")
  return CacheInfo(
      cache_dir=cache_dir,
      root=metadata["root"],
      classes=tuple(metadata["classes"]),
      config=video.PreprocessConfig(**metadata["settings"]),
      entries=entries,
      splits=split_paths,
      failures=tuple(Failure(**f) for f in metadata["failures"]))


# ---------------------------------------------------------------------------
# tf.data pipelines.


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
    # The graph twin of `video.rgb_to_model`.
    return frames / 255.0 * 2.0 - 1.0
  # [N, 2H, W, 1], x above y -> [N, H, W, 2].
  shape = tf.shape(frames)
  frames = tf.reshape(frames, [shape[0], 2, shape[1] // 2, shape[2]])
  frames = tf.transpose(frames, [0, 2, 3, 1])
  return tf.clip_by_value(
      (frames - video.FLOW_JPEG_ZERO) / video.FLOW_JPEG_SCALE, -1.0, 1.0)


def _frames_at(path: tf.Tensor, stream: str, indices: tf.Tensor) -> tf.Tensor:
  """Decodes the frames at `indices` [N] of a stream file, each once."""
  unique_indices, positions = tf.unique(indices)
  encoded = tf.gather(_read_encoded_frames(path, stream), unique_indices)
  return tf.gather(_decode_frames(encoded, stream), positions)


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
    crop_size: int) -> tuple[list[CacheEntry], dict[str, list[Any]]]:
  """Checks a split; returns its entries and per-video columns."""
  info = read_cache(cache_dir)
  entries = info.split_entries(split)
  if not entries:
    raise DatasetError(f"{cache_dir}: the {split!r} split is empty")
  for entry in entries:
    if not set(streams) <= set(entry.streams):
      raise DatasetError(
          f"{cache_dir}: {entry.path} has streams {entry.streams}, not "
          f"{streams}; prepare the data with --streams={','.join(streams)}")
    if crop_size > min(entry.height, entry.width):
      raise DatasetError(
          f"{cache_dir}: crop {crop_size} does not fit {entry.path} "
          f"({entry.height}x{entry.width}); prepare with a larger short_side")
  columns = {
      "index": list(range(len(entries))),
      "label": [e.label_index for e in entries],
      "num_frames": [e.num_frames for e in entries],
      "height": [e.height for e in entries],
      "width": [e.width for e in entries],
  }
  for stream in streams:
    columns[f"{stream}_path"] = [info.stream_path(e, stream) for e in entries]
  return entries, columns


def _per_video_dataset(columns: dict[str, list[Any]]) -> tf.data.Dataset:
  """One element per video: stream file paths as strings, the rest int32."""
  return tf.data.Dataset.from_tensor_slices({
      name:
          tf.constant(values, tf.string if name.endswith("_path") else tf.int32)
      for name, values in columns.items()
  })


def make_train_dataset(cache_dir: str,
                       split: str = "train",
                       streams: Sequence[str] = video.STREAMS,
                       num_frames: int = 64,
                       crop_size: int = 224,
                       batch_size: int = 8,
                       seed: int | None = None,
                       repeat: bool = True) -> tf.data.Dataset:
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
    repeat: repeat forever (batches then all have `batch_size` clips);
      otherwise one pass, the last batch possibly smaller.

  Returns:
    A dataset of dicts: "rgb" float32 [B, num_frames, crop, crop, 3] and/or
    "flow" float32 [B, num_frames, crop, crop, 2] in [-1, 1], "label" int32
    [B], "index" int32 [B] (position of the video in the split).

  Raises:
    DatasetError: if the cache, split, streams or crop do not fit.
  """
  streams = video.validate_streams(streams)
  entries, columns = _split_source(cache_dir, split, streams, crop_size)

  def make_clip(element: dict[str, tf.Tensor],
                element_seed: tf.Tensor) -> dict[str, tf.Tensor]:
    seeds = [
        tf.stack([element_seed, tf.constant(i, tf.int64)]) for i in range(4)
    ]
    total = element["num_frames"]

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
      frames.set_shape([num_frames, crop_size, crop_size, _CHANNELS[stream]])
      clip[stream] = frames
    return clip

  dataset = _per_video_dataset(columns)
  dataset = dataset.shuffle(
      len(entries), seed=seed, reshuffle_each_iteration=True)
  if repeat:
    dataset = dataset.repeat()
  dataset = tf.data.Dataset.zip((dataset, tf.data.Dataset.random(seed=seed)))
  dataset = dataset.map(make_clip, num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.batch(batch_size, drop_remainder=repeat)
  return dataset.prefetch(tf.data.AUTOTUNE)


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
                      streams: Sequence[str] = video.STREAMS,
                      num_frames: int | None = None,
                      crop_size: int = 224,
                      num_clips: int = 1,
                      num_crops: int = 1) -> tf.data.Dataset:
  """Evaluation views of each video of a split, in split order.

  Views are `num_clips` evenly spaced clips (see `evenly_spaced_starts`;
  short videos loop) times `num_crops` crops (1: centre; 3: start, centre and
  end of the longer side), clip-major: view v is clip v // num_crops, crop
  v % num_crops.

  Args:
    cache_dir: a prepared cache.
    split: the split to read.
    streams: a subset of the cached streams.
    num_frames: frames per clip; None for the whole video (then num_clips
      must be 1).
    crop_size: side of the square crops.
    num_clips: clips per video.
    num_crops: 1 or 3.

  Returns:
    A dataset with one element per video: "rgb" float32 [V, T, crop, crop, 3]
    and/or "flow" float32 [V, T, crop, crop, 2], V = num_clips * num_crops,
    T = num_frames (or the video's length), "label" and "index" int32 scalars.

  Raises:
    DatasetError: if the cache, split, streams or crop do not fit.
    ValueError: for num_crops other than 1 or 3, num_clips < 1, or several
      clips of whole videos.
  """
  streams = video.validate_streams(streams)
  if num_clips < 1 or (num_frames is None and num_clips != 1):
    raise ValueError(
        f"num_clips must be >= 1, and 1 for whole videos; got {num_clips}")
  entries, columns = _split_source(cache_dir, split, streams, crop_size)
  columns["clip_starts"] = [
      evenly_spaced_starts(e.num_frames, num_frames or e.num_frames, num_clips)
      for e in entries
  ]
  columns["crop_offsets"] = [
      video.crop_offsets(e.height, e.width, crop_size, num_crops)
      for e in entries
  ]

  def make_views(element: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    total = element["num_frames"]
    length = total if num_frames is None else num_frames
    indices = clip_frame_indices(element["clip_starts"], length, total)
    views = {"label": element["label"], "index": element["index"]}
    for stream in streams:
      frames = _frames_at(element[f"{stream}_path"], stream,
                          tf.reshape(indices, [-1]))
      shape = tf.shape(frames)
      clips = tf.reshape(frames, tf.concat([[num_clips, length], shape[1:]], 0))
      crops = [
          clips[:, :, offset[0]:offset[0] + crop_size,
                offset[1]:offset[1] + crop_size]
          for offset in tf.unstack(element["crop_offsets"], num=num_crops)
      ]
      stacked = tf.reshape(
          tf.stack(crops, axis=1),
          [num_clips * num_crops, length, crop_size, crop_size,
           _CHANNELS[stream]])
      stacked.set_shape([num_clips * num_crops, num_frames, crop_size,
                         crop_size, _CHANNELS[stream]])
      views[stream] = stacked
    return views

  dataset = _per_video_dataset(columns)
  dataset = dataset.map(make_views, num_parallel_calls=tf.data.AUTOTUNE)
  return dataset.prefetch(tf.data.AUTOTUNE)


def read_cached_video(info: CacheInfo, entry: CacheEntry,
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
