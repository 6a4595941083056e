r"""Benchmark of the data path: decoding, optical flow, the cached pipeline.

From the repository root:

  PYTHONPATH=. python3 benchmarks/data_pipeline.py        # 256 px, 224 crop
  PYTHONPATH=. python3 benchmarks/data_pipeline.py --short_side=128 \
      --crop_size=112 --num_frames=32                     # the demo's settings

Every figure is read against a baseline measured in the same run:
  decode   frames/s: decoding alone vs. decoding + 25 fps resampling + resize
           (read_video) and + conversion to model range (rgb_to_model);
  flow     frame pairs/s: TV-L1 in one worker vs. TV-L1 in all workers, and DIS
           in one and in all workers (worker start-up included);
  pipeline clips/s: the tf.data training pipeline over the cache (RGB + flow)
           vs. RGB only, flow only, evaluation clips, and preprocessing the
           same clip straight from the video file (DIS flow) without a cache.
The synthetic videos are a textured room with moving textured shapes, camera
jitter and sensor noise; the cache size per minute of video is measured on
them. Prints a readable table, then one JSON line.
"""

import json
import os
import platform
import shutil
import tempfile
import time
from typing import Any, Callable

from absl import app
from absl import flags
import cv2
import numpy as np

from i3d import labels
from i3d import streams as streams_lib
from i3d.video import flow
from i3d.video import io as video_io
from i3d.video import preprocess as video_preprocess

_SHORT_SIDE = flags.DEFINE_integer("short_side", 256, "Prepared frame size.")
_CROP_SIZE = flags.DEFINE_integer("crop_size", 224, "Training crop.")
_NUM_FRAMES = flags.DEFINE_integer("num_frames", 64, "Frames per clip.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 2, "Clips per batch.")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 10, "Batches timed.")
_FLOW_PAIRS = flags.DEFINE_integer(
    "flow_pairs", 8, "Frame pairs per flow measurement (TV-L1 is slow).")
_NUM_VIDEOS = flags.DEFINE_integer("num_videos", 4, "Videos in the cache.")
_SECONDS = flags.DEFINE_float("seconds", 4.0, "Length of each video.")
_SOURCE_SIZE = flags.DEFINE_list(
    "source_size", ["640", "360"], "Width, height of the synthetic videos.")
_NUM_WORKERS = flags.DEFINE_integer(
    "num_workers", os.cpu_count() or 1, "'All workers' for flow and caching.")
_CACHE_FLOW = flags.DEFINE_enum(
    "cache_flow_algorithm", "dis", flow.FLOW_ALGORITHMS,
    "Flow algorithm of the benchmark cache (dis keeps the run short).")

_SOURCE_FPS = 30.0


def synthetic_scene(num_frames: int, width: int, height: int,
                    seed: int) -> np.ndarray:
  """A room-like scene: textured background, moving shapes, jitter, noise."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(40, 200, (height // 40 + 2, width // 40 + 2, 3))
  walls = cv2.resize(coarse.astype(np.uint8), (width + 8, height + 8),
                     interpolation=cv2.INTER_CUBIC).astype(np.float32)
  detail = cv2.GaussianBlur(
      rng.normal(0, 25, (height + 8, width + 8)), (0, 0), 1.5)
  background = np.clip(walls + detail[..., None], 0, 255)
  # (x, y, radius, speed, colour) of each moving shape.
  shapes = [(rng.uniform(0.2, 0.8), rng.uniform(0.3, 0.7),
             rng.uniform(0.05, 0.12), rng.uniform(0.5, 1.5),
             rng.integers(30, 230, 3)) for _ in range(3)]
  frames = np.empty((num_frames, height, width, 3), np.uint8)
  for t in range(num_frames):
    dx, dy = rng.integers(0, 3, 2)  # Hand-held camera jitter.
    frame = background[4 + dy:4 + dy + height, 4 + dx:4 + dx + width].copy()
    for x, y, radius, speed, colour in shapes:
      phase = 2 * np.pi * speed * t / _SOURCE_FPS
      centre = (int(width * (x + 0.1 * np.sin(phase))),
                int(height * (y + 0.15 * np.cos(phase))))
      axes = (int(width * radius), int(height * radius * 1.8))
      cv2.ellipse(frame, centre, axes, 0, 0, 360, colour.tolist(), -1)
      cv2.ellipse(frame, centre, (axes[0] // 2, axes[1] // 3), 0, 0, 360,
                  (colour * 0.6).tolist(), 3)
    frame += rng.normal(0, 3, frame.shape).astype(np.float32)
    frames[t] = np.clip(frame, 0, 255)
  return frames


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
  start = time.perf_counter()
  result = fn()
  return result, time.perf_counter() - start


def decode_only(path: str) -> int:
  capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
  count = 0
  while capture.read()[0]:
    count += 1
  capture.release()
  return count


def clips_per_second(batches: Any, num_batches: int) -> float:
  """Times `num_batches` batches after two warm-up batches."""
  iterator = iter(batches)
  for _ in range(2):
    next(iterator)
  start = time.perf_counter()
  clips = 0
  for _ in range(num_batches):
    batch = next(iterator)
    clips += int(np.shape(batch["label"])[0]) if np.ndim(batch["label"]) else 1
  return clips / (time.perf_counter() - start)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  # Imported here, as in prepare_data.py: spawned workers re-import this script
  # and would otherwise each import TensorFlow (see `flow.worker_context`).
  # pylint: disable=g-import-not-at-top
  from i3d.data import cache as data_cache
  from i3d.data import pipeline as data_pipeline
  # pylint: enable=g-import-not-at-top
  width, height = (int(v) for v in _SOURCE_SIZE.value)
  workers = _NUM_WORKERS.value
  config = video_preprocess.PreprocessConfig(short_side=_SHORT_SIDE.value,
                                  flow_algorithm=_CACHE_FLOW.value)
  rows = []

  def add(group: str, name: str, value: float, unit: str,
          baseline: str | None = None) -> None:
    base = next((r for r in rows if r["name"] == baseline), None)
    rows.append({"group": group, "name": name, "value": round(value, 3),
                 "unit": unit, "baseline": baseline or name,
                 "ratio": round(value / base["value"], 3) if base else 1.0})

  workdir = tempfile.mkdtemp(prefix="i3d_bench_")
  try:
    num_source_frames = int(_SECONDS.value * _SOURCE_FPS)
    paths = []
    for i in range(_NUM_VIDEOS.value):
      path = os.path.join(workdir, "data", labels.EXERCISE_CLASSES[i % 2],
                          f"clip{i}.mp4")
      os.makedirs(os.path.dirname(path), exist_ok=True)
      video_io.write_video(path,
                        synthetic_scene(num_source_frames, width, height, i),
                        _SOURCE_FPS)
      paths.append(path)

    # Decoding and RGB preprocessing.
    count, seconds = timed(lambda: decode_only(paths[0]))
    add("decode", f"decode {width}x{height} (OpenCV)", count / seconds,
        "frames/s")
    frames, seconds = timed(
        lambda: video_io.read_video(paths[0], short_side=config.short_side))
    add("decode", "read_video (25 fps, resize)", len(frames) / seconds,
        "frames/s", rows[0]["name"])
    _, seconds = timed(lambda: video_preprocess.rgb_to_model(
        video_io.read_video(paths[0], short_side=config.short_side)))
    add("decode", "read_video + rgb_to_model", len(frames) / seconds,
        "frames/s", rows[0]["name"])

    # Optical flow, one OpenCV thread per worker (so one worker = one core).
    pairs = frames[:_FLOW_PAIRS.value + 1]
    threads = cv2.getNumThreads()
    flow.use_one_opencv_thread()
    baseline = f"tvl1, 1 worker ({frames.shape[2]}x{frames.shape[1]})"
    for algorithm in flow.FLOW_ALGORITHMS:
      for num_workers in (1, workers):
        _, seconds = timed(
            lambda: flow.compute_flow(pairs, algorithm, num_workers))
        name = (baseline if (algorithm, num_workers) == ("tvl1", 1) else
                f"{algorithm}, {num_workers} workers (incl. start-up)"
                if num_workers > 1 else f"{algorithm}, 1 worker")
        add("flow", name, (len(pairs) - 1) / seconds, "pairs/s", baseline)
    # One DIS pair per worker costs nothing: this is the pool's start-up.
    _, seconds = timed(lambda: flow.compute_flow(pairs[:workers + 1], "dis",
                                                 workers))
    add("flow", f"worker pool start-up ({workers} workers)", seconds, "s")
    cv2.setNumThreads(threads)

    # The prepared cache and the tf.data pipelines.
    cache = os.path.join(workdir, "cache")
    report, seconds = timed(lambda: data_cache.prepare_dataset(
        cache, data_dir=os.path.join(workdir, "data"), config=config,
        num_workers=workers, eval_fraction=0.0))
    assert report.ok, report.summary()
    info = data_cache.read_cache(cache)
    num_frames = sum(e.video_frames for e in info.entries)
    add("prepare", f"prepare_dataset ({config.flow_algorithm}, {workers} "
        "worker(s))", num_frames / seconds, "frames/s")
    minutes = num_frames / config.fps / 60
    sizes = {
        stream: sum(os.path.getsize(info.stream_path(e, stream))
                    for e in info.entries) / 1e6 / minutes
        for stream in streams_lib.STREAMS
    }
    clip = dict(num_frames=_NUM_FRAMES.value, crop_size=_CROP_SIZE.value)
    both = "train rgb+flow"
    for name, streams in ((both, streams_lib.STREAMS), ("train rgb", ("rgb",)),
                          ("train flow", ("flow",))):
      batches = data_pipeline.make_train_dataset(
          cache, streams=streams, batch_size=_BATCH_SIZE.value, seed=0, **clip)
      add("pipeline", name, clips_per_second(batches, _NUM_BATCHES.value),
          "clips/s", both)
    batches = data_pipeline.make_eval_dataset(cache, "train", **clip).repeat()
    add("pipeline", "eval rgb+flow (1 view)",
        clips_per_second(batches, _NUM_BATCHES.value * _BATCH_SIZE.value),
        "clips/s", both)
    direct_config = video_preprocess.PreprocessConfig(
        short_side=config.short_side, flow_algorithm="dis",
        max_frames=_NUM_FRAMES.value)
    _, seconds = timed(lambda: video_preprocess.load_clip(
        paths[0], streams_lib.STREAMS, direct_config, _CROP_SIZE.value))
    add("pipeline", "no cache: load_clip rgb+dis flow", 1 / seconds, "clips/s",
        both)
  finally:
    shutil.rmtree(workdir)

  settings = {
      "source": f"{width}x{height}@{_SOURCE_FPS:g}fps",
      "seconds": _SECONDS.value,
      "short_side": _SHORT_SIDE.value,
      "crop_size": _CROP_SIZE.value,
      "num_frames": _NUM_FRAMES.value,
      "batch_size": _BATCH_SIZE.value,
      "num_workers": workers,
      "cache_flow_algorithm": _CACHE_FLOW.value,
  }
  machine = (f"{platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs")
  print(f"Data pipeline benchmark on {machine}; {settings}")
  print(f"{'stage':<9} {'measurement':<44} {'value':>10} {'unit':<9} ratio  "
        "(vs. baseline)")
  for row in rows:
    print(f"{row['group']:<9} {row['name']:<44} {row['value']:>10.2f} "
          f"{row['unit']:<9} {row['ratio']:5.2f}x ({row['baseline']})")
  print(f"cache size per minute of 25 fps video: rgb {sizes['rgb']:.1f} MB, "
        f"flow {sizes['flow']:.1f} MB, both {sum(sizes.values()):.1f} MB")
  print(json.dumps({"benchmark": "data_pipeline", "machine": machine,
                    "loadavg": [round(x, 2) for x in os.getloadavg()],
                    "settings": settings, "results": rows,
                    "cache_mb_per_minute": {k: round(v, 2)
                                            for k, v in sizes.items()}}))


if __name__ == "__main__":
  app.run(main)
