"""The prepared cache: each video decoded once, its streams stored as JPEGs.

`prepare_dataset` finds a dataset's videos (`i3d.data.sources`), decodes each
video once, computes the streams asked for (`i3d.video.preprocess`) and stores
them JPEG-compressed in a cache directory, with the splits
(`i3d.data.splits`); `read_cache` reads it back for the `tf.data` pipelines
(`i3d.data.pipeline`):

  CACHE_DIR/
    metadata.json        classes, settings, the prepared entries, failures
    splits.json          {"method", "seed", "eval_fraction", "train", "eval"}
    videos/KEY.json      per-video record: frame count and size (commit marker)
    videos/KEY.rgb.pb    tf.train.SequenceExample, feature list "rgb/encoded":
                         one RGB JPEG per frame
    videos/KEY.flow.pb   feature list "flow/encoded": one grayscale JPEG per
                         frame holding x above y, quantised as
                         round(127 * flow + 128) (`preprocess.encode_flow_jpeg`)

KEY is a hash of the video file's content and the preprocessing settings, so
a rerun skips what is done, renamed files are not recomputed, and changed
settings do not reuse stale entries. Every file is written to a temporary name
and renamed; the per-video record is written last, so an interrupted run leaves
no entry that looks complete but is not.
"""

import collections
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import glob
import hashlib
import json
import os
import time
from typing import Any, Iterable, Iterator, Sequence

from absl import logging
import tensorflow as tf

from i3d import fileio
from i3d import streams as streams_lib
from i3d.data import sources as sources_lib
from i3d.data import splits as splits_lib
from i3d.video import flow
from i3d.video import io
from i3d.video import preprocess

METADATA_FILE = "metadata.json"
SPLITS_FILE = "splits.json"
# Part of every entry key: bump when the stored format changes.
CACHE_FORMAT_VERSION = 1

_VIDEOS_DIR = "videos"
_LOCK_FILE = ".prepare.lock"
_HASH_CHUNK_BYTES = 1 << 20
_PROGRESS_INTERVAL_S = 5.0


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
  failures: tuple[sources_lib.Failure, ...]
  elapsed_s: float

  @property
  def ok(self) -> bool:
    """True when every video was prepared."""
    return not self.failures

  def summary(self) -> str:
    """Returns a readable summary, one line per failed preprocess."""
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
  """A prepared preprocess.

  Attributes:
    path: path relative to the data root, as in the splits.
    label: class name.
    label_index: position of the label in the class list.
    subject: the person filmed, if known.
    key: the cache key (content hash and settings).
    video_frames: the video's length, in frames at the prepared frame rate
      (stored as "num_frames"; a clip's length is the pipeline's
      `num_frames`).
    height: frame height in pixels.
    width: frame width in pixels.
    streams: the streams stored for this preprocess.
  """
  path: str
  label: str
  label_index: int
  subject: str | None
  key: str
  video_frames: int
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
  config: preprocess.PreprocessConfig
  entries: tuple[CacheEntry, ...]
  splits: dict[str, tuple[str, ...]]
  failures: tuple[sources_lib.Failure, ...]

  @property
  def streams(self) -> tuple[str, ...]:
    """The streams stored for every entry."""
    return tuple(s for s in streams_lib.STREAMS
                 if all(s in entry.streams for entry in self.entries))

  def split_entries(self, split: str) -> list[CacheEntry]:
    """Returns the entries of a split, in split order (their "index").

    Raises:
      DatasetError: if the split is unknown.
    """
    if split not in self.splits:
      raise sources_lib.DatasetError(
          f"{self.cache_dir}: no split {split!r} (splits: "
          f"{', '.join(self.splits)})")
    by_path = {entry.path: entry for entry in self.entries}
    return [by_path[path] for path in self.splits[split]]

  def split_fingerprint(self, split: str) -> str:
    """A short hash of a split's videos: their content, settings and labels.

    Equal for the same videos, labels and preprocessing in any order or
    place, so a run can tell that its training data changed.

    Raises:
      DatasetError: if the split is unknown.
    """
    items = sorted(f"{e.key} {e.label}" for e in self.split_entries(split))
    return hashlib.sha256("\n".join(items).encode("utf-8")).hexdigest()[:16]

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


@dataclasses.dataclass(frozen=True)
class _Task:
  """A video whose entry lacks some streams."""
  source: sources_lib.VideoSource
  content_sha256: str
  key: str
  streams: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _Outcome:
  """What happened to one video: its entry record, or the reason it failed."""
  source: sources_lib.VideoSource
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


def _entry_key(content_sha256: str, config: preprocess.PreprocessConfig) -> str:
  settings = (f"{config.fingerprint()}/{CACHE_FORMAT_VERSION}/"
              f"{preprocess.RGB_JPEG_QUALITY}/{preprocess.FLOW_JPEG_QUALITY}")
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
  return tuple(s for s in streams_lib.STREAMS
               if os.path.isfile(_stream_path(videos_dir, key, s)))


def _sequence_example(stream: str, encoded: preprocess.EncodedVideo) -> bytes:
  example = tf.train.SequenceExample()
  context = example.context.feature
  context["num_frames"].int64_list.value.append(encoded.video_frames)
  context["height"].int64_list.value.append(encoded.height)
  context["width"].int64_list.value.append(encoded.width)
  feature_list = example.feature_lists.feature_list[f"{stream}/encoded"]
  for data in encoded.frames[stream]:
    feature_list.feature.add().bytes_list.value.append(data)
  return example.SerializeToString()


def _write_entry(videos_dir: str, task: _Task, encoded: preprocess.EncodedVideo,
                 config: preprocess.PreprocessConfig) -> dict[str, Any]:
  """Writes the streams of a video, then its record, each atomically."""
  for stream in encoded.frames:
    fileio.write_bytes(_stream_path(videos_dir, task.key, stream),
                       _sequence_example(stream, encoded))
  record = {
      "key": task.key,
      "sha256": task.content_sha256,
      "settings": config.to_dict(),
      "num_frames": encoded.video_frames,
      "height": encoded.height,
      "width": encoded.width,
  }
  # Written last: the record marks the entry's stream files as complete.
  fileio.write_json(_record_path(videos_dir, task.key), record)
  return record


def _failure_reason(error: Exception) -> str:
  """Describes why a video could not be encoded."""
  if isinstance(error, io.VideoError):
    return error.reason
  # One odd file (an OpenCV or codec error, a dead worker) must not stop the
  # others; the type is kept in the reason for a bug report.
  return f"unexpected {type(error).__name__}: {error}"


def _encode_videos(
    tasks: Sequence[_Task], config: preprocess.PreprocessConfig,
    num_workers: int
) -> Iterator[tuple[_Task, preprocess.EncodedVideo | None, str | None]]:
  """Encodes videos in this process or in worker processes, as they finish.

  Yields:
    (task, encoded video, None) or (task, None, reason of the failure).
  """
  if num_workers <= 1 or len(tasks) <= 1:
    for task in tasks:
      try:
        encoded, error = preprocess.encode_video(task.source.path, task.streams,
                                            config), None
      except Exception as e:  # pylint: disable=broad-except
        encoded, error = None, _failure_reason(e)
      yield task, encoded, error
    return
  # The workers run `preprocess.encode_video`: OpenCV and NumPy only. They
  # keep OpenCV's threads: while fewer videos than cores are left (one long
  # video, the last of a batch, videos of unequal lengths) the running flows
  # take the idle cores, which one-thread workers left idle (1.4 of 2 cores
  # busy on 2 videos).
  pool = flow.worker_pool(min(num_workers, len(tasks)),
                          one_opencv_thread=False)
  try:
    futures = {
        pool.submit(preprocess.encode_video, task.source.path, task.streams,
                    config):
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
      raise sources_lib.DatasetError(
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


def _plan(sources: Sequence[sources_lib.VideoSource], videos_dir: str,
          streams: Sequence[str], config: preprocess.PreprocessConfig,
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
                    streams: Sequence[str] = streams_lib.STREAMS,
                    config: preprocess.PreprocessConfig = (
                        preprocess.PreprocessConfig()),
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
  streams = streams_lib.parse_streams(streams)
  # Before hours of work, not after.
  splits_lib.check_eval_fraction(eval_fraction)
  start = time.monotonic()
  discovery = sources_lib.discover_videos(data_dir, manifest, classes)
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
        sources_lib.Failure(o.source.path, o.error)
        for o in outcomes if o.error)
    _warn_about_duplicates(succeeded)
    splits = splits_lib.split_videos([o.source for o in succeeded],
                                     eval_fraction, seed)
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
    raise sources_lib.DatasetError(
        f"{cache_dir}: not a prepared dataset (no {METADATA_FILE}); run "
        "prepare_data.py first")
  with open(metadata_path, encoding="utf-8") as f:
    metadata = json.load(f)
  with open(os.path.join(cache_dir, SPLITS_FILE), encoding="utf-8") as f:
    splits = json.load(f)
  entries = tuple(
      CacheEntry(**{k: v for k, v in e.items()
                    if k not in ("num_frames", "streams")},
                 video_frames=e["num_frames"], streams=tuple(e["streams"]))
      for e in metadata["entries"])
  known_paths = {e.path for e in entries}
  split_paths = {name: tuple(splits[name]) for name in sources_lib.SPLITS}
  unknown = sorted(set().union(*split_paths.values()) - known_paths)
  if unknown:
    raise sources_lib.DatasetError(
        f"{cache_dir}: {SPLITS_FILE} names videos that are not prepared "
        f"(e.g. {unknown[0]}); run the preparation again")
  return CacheInfo(
      cache_dir=cache_dir,
      root=metadata["root"],
      classes=tuple(metadata["classes"]),
      config=preprocess.PreprocessConfig(**metadata["settings"]),
      entries=entries,
      splits=split_paths,
      failures=tuple(sources_lib.Failure(**f) for f in metadata["failures"]))


def write_split_view(cache_dir: str, view_dir: str,
                     train_paths: Sequence[str],
                     eval_paths: Sequence[str]) -> str:
  """A cache directory with other splits over the same prepared videos.

  `view_dir` gets a copy of the cache's metadata, its own splits.json and a
  `videos` link to the cache's prepared videos, so everything that reads a
  cache (training, evaluation, evaluate.py) reads the videos of `cache_dir`
  with these splits, and nothing is decoded or stored twice: one view per
  cross-validation fold. Rewritten on every call.

  Args:
    cache_dir: a prepared cache.
    view_dir: the view's directory (created if needed).
    train_paths: the training videos' paths (as in the cache's entries).
    eval_paths: the evaluation videos' paths.

  Returns:
    `view_dir`.

  Raises:
    DatasetError: if the cache is not prepared or a path is not one of its
      videos.
  """
  info = read_cache(cache_dir)
  unknown = sorted((set(train_paths) | set(eval_paths)) -
                   {e.path for e in info.entries})
  if unknown:
    raise sources_lib.DatasetError(
        f"{cache_dir}: no prepared video {unknown[0]} for the split view "
        f"{view_dir}")
  os.makedirs(view_dir, exist_ok=True)
  with open(os.path.join(cache_dir, METADATA_FILE), encoding="utf-8") as f:
    fileio.write_text(os.path.join(view_dir, METADATA_FILE), f.read())
  fileio.write_json(os.path.join(view_dir, SPLITS_FILE), {
      "method": "view", "cache_dir": os.path.abspath(cache_dir),
      "train": sorted(train_paths), "eval": sorted(eval_paths)})
  link = os.path.join(view_dir, _VIDEOS_DIR)
  target = os.path.abspath(os.path.join(cache_dir, _VIDEOS_DIR))
  if os.path.islink(link) and os.readlink(link) != target:
    os.remove(link)
  if not os.path.islink(link):
    os.symlink(target, link)
  return view_dir
