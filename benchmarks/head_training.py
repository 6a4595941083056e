r"""Benchmark of training with a frozen backbone: cached features or not.

From the repository root:

  PYTHONPATH=. python3 benchmarks/head_training.py      # demo's, ~2-3 min
  PYTHONPATH=. python3 benchmarks/head_training.py --trainable=logits,mixed_5
  PYTHONPATH=. python3 benchmarks/head_training.py \
      --cache_dir=data/synthetic_cache

With `--trainable=logits` or `mixed_5` the Trainer either computes the frozen
part once for `feature_views` augmented views per video and trains on the
cached outputs (the fast path, `TrainConfig.uses_feature_cache`), or runs the
frozen backbone on a new clip every step (the slow path, `--nofeature_cache`).
For each trainable setting this measures, in one run on one Trainer:
  extract  train.features.training_features (tracing, tf.data clips from the cache,
           frozen forward, saving the .npz) in views/s, against, batch by
           batch and interleaved, the same work pre-traced (so the
           difference is tracing and saving), the frozen forward alone on one
           constant batch (the difference is the input pipeline) and that
           with bfloat16 automatic mixed precision (oneDNN, CPU; the
           features' relative error is reported);
  train    steps/s of the slow path (Trainer's step on the tf.data clips) vs.
           the same step on one constant batch (does the pipeline starve the
           model?) and the fast path (the step on cached features);
  amortised the wall time of a run of `--run_steps` steps over
           `--run_videos` training videos: slow path vs. fast path including
           its extraction (the one-time tracing and saving measured above,
           plus the views at the pre-traced rate), and the break-even number
           of steps.
The cache is built from the synthetic generator (DIS flow) unless
`--cache_dir` names a prepared one. Prints a table, then one JSON line.
"""

# The benchmarks drive the Trainer's internals (its step, its datasets).
# pylint: disable=protected-access

import gc
import os
import shutil
import statistics
import tempfile
import time
from typing import Any, Callable, Dict, Sequence

from absl import app
from absl import flags

from benchmarks import common

common.quiet_tensorflow_logs()

# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import tensorflow as tf

from i3d import config as config_lib
from i3d.data import cache as data_cache
from i3d.train import features as train_features
from i3d.train import loop as train_loop
from i3d.train import steps as train_steps
from i3d.video import preprocess as video_preprocess
from i3d_demo import synthetic
# pylint: enable=g-import-not-at-top,wrong-import-position

_CACHE_DIR = flags.DEFINE_string(
    "cache_dir", None, "A prepared cache to use (default: a fresh synthetic "
    "one of --clips_per_class clips per class).")
_CLIPS_PER_CLASS = flags.DEFINE_integer(
    "clips_per_class", 1, "Synthetic clips per class of the fresh cache.")
_TRAINABLE = flags.DEFINE_list(
    "trainable", ["mixed_5"], "Settings of --trainable to measure, e.g. "
    "logits,mixed_5 (each freezes a backbone part; demo: mixed_5).")
# The run's settings (i3d.config), at the demo's values (configs/demo.cfg).
_SETTINGS = config_lib.define_flags(
    config_lib.TrainConfig,
    ["stream", "num_frames", "crop_size", "batch_size", "feature_views"],
    defaults={"num_frames": 32, "crop_size": 112, "batch_size": 16,
              "feature_views": 4}, note="Default: the demo's.")
_STREAM, _NUM_FRAMES, _CROP_SIZE, _BATCH_SIZE, _FEATURE_VIEWS = (
    _SETTINGS[name] for name in ("stream", "num_frames", "crop_size",
                                 "batch_size", "feature_views"))
_SHORT_SIDE = config_lib.define_flags(
    config_lib.PreprocessConfig, ["short_side"], defaults={"short_side": 128},
    note="Of the fresh cache; default: the demo's.")["short_side"]
_EXTRACT_ROUNDS = flags.DEFINE_integer(
    "extract_rounds", 3, "Timed batches of each extraction variant.")
_SLOW_STEPS = flags.DEFINE_integer("slow_steps", 2, "Timed slow-path steps.")
_FAST_STEPS = flags.DEFINE_integer("fast_steps", 20, "Timed fast-path steps.")
_RUN_STEPS = flags.DEFINE_integer("run_steps", 300,
                                  "Steps of the amortised run (demo: 300).")
_RUN_VIDEOS = flags.DEFINE_integer(
    "run_videos", 160, "Training videos of the amortised run (demo: 160).")
_AMP = flags.DEFINE_bool(
    "amp", True, "Also time the extraction with bfloat16 mixed precision "
    "(CPU only).")
_RGB_CHECKPOINT = flags.DEFINE_string(
    "rgb_checkpoint", common.DEFAULT_RGB_CHECKPOINT,
    "Kinetics RGB weights, or 'random'.")


def make_cache(workdir: str) -> str:
  """Generates and prepares a small synthetic dataset (train split only)."""
  manifest = synthetic.generate_dataset(
      os.path.join(workdir, "videos"), clips_per_class=_CLIPS_PER_CLASS.value,
      seed=0, num_workers=os.cpu_count() or 1)
  cache_dir = os.path.join(workdir, "cache")
  report = data_cache.prepare_dataset(
      cache_dir, manifest=manifest,
      config=video_preprocess.PreprocessConfig(short_side=_SHORT_SIDE.value,
                                    flow_algorithm="dis"),
      num_workers=os.cpu_count() or 1, eval_fraction=0.0)
  assert report.ok, report.summary()
  return cache_dir


def timed(fn: Callable[[], Any]) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def features_dataset(features: Dict[str, np.ndarray], config: Any):
  """The fast path's batches, as Trainer.train makes them."""
  return tf.data.Dataset.from_tensor_slices(features).shuffle(
      len(features["label"]), seed=config.seed).repeat().batch(
          config.batch_size, drop_remainder=True).prefetch(2)


def measure(trainable: str, cache_dir: str, checkpoint: str, workdir: str,
            rows: common.Rows) -> None:
  """Adds the rows of one --trainable setting."""
  config = config_lib.TrainConfig(
      cache_dir=cache_dir, train_dir=tempfile.mkdtemp(dir=workdir),
      classes=data_cache.read_cache(cache_dir).classes, stream=_STREAM.value,
      num_frames=_NUM_FRAMES.value, crop_size=_CROP_SIZE.value,
      batch_size=_BATCH_SIZE.value, trainable=trainable,
      learning_rate=0.01, lr_schedule="constant",
      feature_views=_FEATURE_VIEWS.value, rgb_checkpoint=checkpoint,
      export=False)
  trainer = train_loop.Trainer(config)
  num_videos = len(data_cache.read_cache(cache_dir).split_entries("train"))
  num_views = num_videos * config.feature_views
  name = f"{trainable} ({config.stream} {config.num_frames}x" \
         f"{config.crop_size} b{config.batch_size})"

  # One-time extraction, as the Trainer does it (tracing, pipeline, forward,
  # saving the .npz), then the same work pre-traced, then parts of it.
  extract_s = timed(lambda: train_features.training_features(trainer.stages,
                                                             config))
  # Now read back from the .npz.
  features = train_features.training_features(trainer.stages, config)
  base = rows.add("extract", f"{name}: training_features (one-time)",
                  num_views / extract_s, "views/s", seconds=round(extract_s, 2),
                  views=num_views)["name"]
  clips = iter(train_features.clip_dataset(config, config.seed))
  batch = next(clips)
  frozen = tf.function(lambda x: {s: st.frozen(x[s])
                                  for s, st in trainer.stages.items()})
  run_frozen = lambda x: {s: v.numpy() for s, v in frozen(x).items()}
  amp_options = ({"auto_mixed_precision_onednn_bfloat16": True}
                 if _AMP.value and not tf.config.list_physical_devices("GPU")
                 else None)

  def run_amp() -> Dict[str, np.ndarray]:
    restore = common.grappler_options(amp_options)
    try:  # The first call optimises the graph again, in bfloat16.
      return run_frozen(batch)
    finally:
      restore()
  reference = run_frozen(batch)  # Traces.
  amp = run_amp() if amp_options else None
  times = {"pipeline": [], "constant": [], "amp": []}
  for _ in range(_EXTRACT_ROUNDS.value):  # Interleaved against load.
    times["pipeline"].append(timed(lambda: run_frozen(next(clips))))
    times["constant"].append(timed(lambda: run_frozen(batch)))
    if amp_options:
      times["amp"].append(timed(run_amp))
  clips = None  # Frees the iterator and its prefetching threads.
  rate = {k: config.batch_size / statistics.median(v)
          for k, v in times.items() if v}
  # Each row against the one before: tracing and saving, the input
  # pipeline, then the precision.
  traced = rows.add(
      "extract", f"{name}: pre-traced frozen forward on tf.data clips",
      rate["pipeline"], "views/s", base)["name"]
  forward = rows.add(
      "extract", f"{name}: frozen forward only (one constant batch)",
      rate["constant"], "views/s", traced)["name"]
  if amp is not None:
    error = max(np.linalg.norm(amp[s] - reference[s]) /
                np.linalg.norm(reference[s]) for s in reference)
    rows.add("extract", f"{name}: frozen forward only, bf16 AMP",
             rate["amp"], "views/s", forward, rel_err=float(f"{error:.2g}"))
  # One-time costs (tracing, saving) plus the steady rate, for the run below.
  fixed_s = max(extract_s - num_views / rate["pipeline"], 0.0)
  extract_rate = rate["pipeline"]

  # Training steps: slow path on the pipeline, on a constant batch; fast path.
  slow_step = train_steps.make_train_step(trainer.strategy, trainer.state,
                                          config, False)
  fast_step = train_steps.make_train_step(trainer.strategy, trainer.state,
                                          config, True)
  distribute = trainer.strategy.experimental_distribute_dataset
  iterators = {
      "slow": iter(distribute(train_features.clip_dataset(config,
                                                         config.seed + 1))),
      "constant": iter(distribute(
          tf.data.Dataset.from_tensors(batch).repeat())),
      "fast": iter(distribute(features_dataset(features, config)))}
  runs = {
      "slow": lambda: float(slow_step(iterators["slow"])["loss"]),
      "constant": lambda: float(slow_step(iterators["constant"])["loss"]),
      "fast": lambda: float(fast_step(iterators["fast"])["loss"])}
  for run in runs.values():  # Trace, and fill the pipeline's buffers.
    run()
  times = {k: [] for k in runs}
  fast_per_round = max(1, _FAST_STEPS.value // max(_SLOW_STEPS.value, 1))
  for _ in range(max(_SLOW_STEPS.value, 1)):  # Interleaved against load.
    times["slow"].append(timed(runs["slow"]))
    times["constant"].append(timed(runs["constant"]))
    times["fast"].append(timed(lambda: [runs["fast"]()
                                        for _ in range(fast_per_round)])
                         / fast_per_round)
  # Iterators left alive keep their tf.data threads prefetching: an earlier
  # setting's would slow the next one's measurements down.
  iterators.clear()
  gc.collect()
  step_rate = {k: 1.0 / statistics.median(v) for k, v in times.items()}
  slow = rows.add("train", f"{name}: slow path (backbone every step)",
                  step_rate["slow"], "steps/s")["name"]
  rows.add("train", f"{name}: slow path, constant batch (no pipeline)",
           step_rate["constant"], "steps/s", slow)
  rows.add("train", f"{name}: fast path (cached features)", step_rate["fast"],
           "steps/s", slow)

  # The amortised run.
  run_views = _RUN_VIDEOS.value * config.feature_views
  run_extract = fixed_s + run_views / extract_rate
  slow_total = _RUN_STEPS.value / step_rate["slow"]
  fast_total = run_extract + _RUN_STEPS.value / step_rate["fast"]
  per_step_saving = 1.0 / step_rate["slow"] - 1.0 / step_rate["fast"]
  slow_row = rows.add(
      "amortised", f"{name}: {_RUN_STEPS.value} steps, slow path",
      slow_total, "s")["name"]
  rows.add("amortised", f"{name}: {_RUN_STEPS.value} steps, fast path + "
           f"extraction of {run_views} views", fast_total, "s", slow_row,
           extraction_s=round(run_extract, 1), one_time_s=round(fixed_s, 1),
           break_even_steps=(round(run_extract / per_step_saving)
                             if per_step_saving > 0 else None))


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  workdir = tempfile.mkdtemp(prefix="i3d_head_bench_")
  try:
    start = time.perf_counter()
    cache_dir = _CACHE_DIR.value or make_cache(workdir)
    cache_s = time.perf_counter() - start
    checkpoint = common.rgb_checkpoint(_RGB_CHECKPOINT.value, workdir)
    rows = common.Rows()
    for trainable in _TRAINABLE.value:
      if trainable not in config_lib.TRAINABLE_BOUNDARIES or (
          config_lib.TRAINABLE_BOUNDARIES[trainable] is None):
        raise app.UsageError(f"--trainable={trainable} freezes nothing")
      measure(trainable, cache_dir, checkpoint, workdir, rows)
    info = data_cache.read_cache(cache_dir)
    settings = {"cache_dir": _CACHE_DIR.value or "fresh synthetic",
                "train_videos": len(info.split_entries("train")),
                "cache_build_s": round(cache_s, 1),
                "feature_views": _FEATURE_VIEWS.value,
                "run_steps": _RUN_STEPS.value,
                "run_videos": _RUN_VIDEOS.value,
                "rgb_checkpoint": checkpoint}
    rows.print_table(
        f"Frozen-backbone training benchmark on {common.machine()}; load "
        f"{common.load_average()}; {settings}",
        note_fields=("seconds", "rel_err", "extraction_s",
                     "break_even_steps"))
    rows.emit_json("head_training", settings)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
