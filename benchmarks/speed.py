r"""Benchmark of the stages around the model (issue 14), before vs. after.

From the repository root:

  PYTHONPATH=. python3 benchmarks/speed.py \
      --cache_dir=data/synthetic_cache --train_dir=runs/demo
  # Same, with today's code in another checkout as the same-run baseline:
  git worktree add --detach /tmp/before <commit>
  PYTHONPATH=. python3 benchmarks/speed.py --before=/tmp/before \
      --cache_dir=data/synthetic_cache --train_dir=runs/demo

Each part runs in fresh subprocesses, once per tree (`--before`, then this
checkout; `--rounds` alternates them), with PYTHONPATH and the working
directory set to that tree, so each tree's own library is measured by the
same code under the same load; an "after" row's ratio is read against the
"before" row of the same round. The parts (`--parts`):

  eval     `evaluate_model` of the run in --train_dir on the eval split of
           --cache_dir (whole videos, the run's views), videos/s including
           tracing, and the top-1 (it must not change).
  extract  `Trainer.training_features` (frozen backbone, 1 view of each
           training video; the library's default precision) in views/s,
           against the frozen forward alone on one constant batch in float32
           and in bfloat16 (grappler's oneDNN rewrite, set by this script).
  tvl1     `prepare_data.py --flow_algorithm=tvl1` with its default workers on
           1 long video, 2 and 20 short ones: cores busy ((user+sys)/wall of
           the process tree, from wait4's rusage) and frame pairs/s.
  startup  what a spawned worker of train.py pays: importing train.py (as
           multiprocessing's spawn does with `__main__`), seconds and peak
           resident MB.
Prints a table, then one JSON line.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, Sequence

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import common  # pylint: disable=g-import-not-at-top,wrong-import-position

PARTS = ("eval", "extract", "tvl1", "startup")

_PARTS = flags.DEFINE_list("parts", list(PARTS), f"Of {PARTS}.")
_BEFORE = flags.DEFINE_string(
    "before", None, "A checkout of the code to compare with (e.g. a worktree "
    "of today's main); rows of this checkout are then read against it.")
_ROUNDS = flags.DEFINE_integer("rounds", 1, "Before/after alternations.")
_CACHE_DIR = flags.DEFINE_string(
    "cache_dir", "data/synthetic_cache", "A prepared cache (eval, extract).")
_TRAIN_DIR = flags.DEFINE_string(
    "train_dir", "runs/demo", "A train.py run on --cache_dir (eval, extract).")
_EXTRACT_VIDEOS = flags.DEFINE_integer(
    "extract_videos", 160, "Training videos whose features are extracted.")
_EVAL_VIDEOS = flags.DEFINE_integer(
    "eval_videos", 0, "Evaluate the first this many eval videos (0: all).")
_TVL1_SHORT_SIDE = flags.DEFINE_integer("tvl1_short_side", 128,
                                        "Frame size for TV-L1 (demo: 128).")
_TVL1_VIDEOS = flags.DEFINE_list(
    "tvl1_videos", ["1x100", "2x40", "20x12"],
    "Video sets for TV-L1: COUNTxFRAMES (frames of each video).")
_CHILD = flags.DEFINE_string("child", None, "Internal: run one part here.")


# ----------------------------------------------------------------------------
# Children: one measurement in a fresh process, with the tree's own library.


def _find(attribute: str, *module_names: str) -> Any:
  """`attribute` of the first of `module_names` that has it (the library's
  old and new layouts)."""
  import importlib  # pylint: disable=g-import-not-at-top
  for name in module_names:
    try:
      module = importlib.import_module(name)
    except ImportError:
      continue
    if hasattr(module, attribute):
      return getattr(module, attribute)
  raise ImportError(f"{attribute} is in none of {module_names}")


def child_eval() -> Dict[str, Any]:
  common.quiet_tensorflow_logs()
  load_run = _find("load_run", "i3d.eval.runs", "i3d.trained")
  evaluate_model = _find("evaluate_model", "i3d.eval.evaluate",
                         "i3d.eval.runs", "i3d.trained")
  run = load_run(_TRAIN_DIR.value)
  workdir = tempfile.mkdtemp(prefix="speed_eval_")
  cache_dir = _CACHE_DIR.value
  if _EVAL_VIDEOS.value:
    cache_dir = _subset_cache(cache_dir, workdir, "eval", _EVAL_VIDEOS.value)
  started = time.perf_counter()
  result = evaluate_model(run.classifier, run.config, cache_dir=cache_dir,
                          split="eval")
  seconds = time.perf_counter() - started
  shutil.rmtree(workdir, ignore_errors=True)
  return {"videos": len(result.paths), "seconds": seconds,
          "videos_per_s": len(result.paths) / seconds,
          "top1": result.metrics["top1"]}


def child_extract() -> Dict[str, Any]:
  common.quiet_tensorflow_logs()
  import dataclasses  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  trainer_class = _find("Trainer", "i3d.train.loop", "i3d.training")
  load_config = _find("load_config", "i3d.config", "i3d.eval.runs",
                      "i3d.train.loop", "i3d.training")
  read_cache = _find("read_cache", "i3d.data.cache", "i3d.dataset")
  config = load_config(_TRAIN_DIR.value)
  workdir = tempfile.mkdtemp(prefix="speed_extract_")
  # A subset cache: the first --extract_videos training videos, one view each.
  info = read_cache(_CACHE_DIR.value)
  num_videos = min(_EXTRACT_VIDEOS.value, len(info.split_entries("train")))
  config = dataclasses.replace(
      config, cache_dir=_subset_cache(_CACHE_DIR.value, workdir, "train",
                                      num_videos),
      train_dir=os.path.join(workdir, "train"), feature_views=1)
  trainer = trainer_class(config)
  started = time.perf_counter()
  try:  # The library's layout since issue 15, then the one before.
    features = _find("training_features", "i3d.train.features")(
        trainer.stages, config)
  except ImportError:
    features = trainer.training_features()
  seconds = time.perf_counter() - started
  views = len(features["label"])
  # The frozen forward alone, on one constant batch of the same shape.
  batch = {s: tf.random.uniform(
      [config.batch_size, config.num_frames, config.crop_size,
       config.crop_size, 3 if s == "rgb" else 2], -1.0, 1.0)
           for s in config.streams}
  rates = {}
  for precision in ("float32", "bfloat16"):
    forward = tf.function(lambda x: {s: st.frozen(x[s])
                                     for s, st in trainer.stages.items()})
    restore = common.grappler_options(
        {"auto_mixed_precision_onednn_bfloat16": precision == "bfloat16"})
    try:
      outputs = forward(batch)  # Traced and instantiated with the option.
      calls = 3
      begin = time.perf_counter()
      for _ in range(calls):
        outputs = forward(batch)
      np.asarray(next(iter(outputs.values())))
      rates[precision] = calls * config.batch_size / (
          time.perf_counter() - begin)
    finally:
      restore()
  shutil.rmtree(workdir, ignore_errors=True)
  return {"views": views, "seconds": seconds, "views_per_s": views / seconds,
          "forward_float32_views_per_s": rates["float32"],
          "forward_bfloat16_views_per_s": rates["bfloat16"]}


def _subset_cache(cache_dir: str, workdir: str, split: str,
                  num_videos: int) -> str:
  """A copy of a cache's metadata keeping the first `num_videos` of a split.

  The video files are not copied: the metadata's root points at them.
  """
  subset = os.path.join(workdir, "cache")
  os.makedirs(subset)
  with open(os.path.join(cache_dir, "metadata.json"), encoding="utf-8") as f:
    metadata = json.load(f)
  with open(os.path.join(cache_dir, "splits.json"), encoding="utf-8") as f:
    splits = json.load(f)
  splits = {name: (keys[:num_videos] if name == split else keys)
            for name, keys in splits.items()}
  with open(os.path.join(subset, "metadata.json"), "w", encoding="utf-8") as f:
    json.dump(metadata, f)
  with open(os.path.join(subset, "splits.json"), "w", encoding="utf-8") as f:
    json.dump(splits, f)
  os.symlink(os.path.abspath(os.path.join(cache_dir, "videos")),
             os.path.join(subset, "videos"))
  return subset


# What a spawned worker does with train.py as `__main__`: import it (its flag
# definitions and imports); run as its own program so that no flags clash.
_STARTUP_CODE = """
import json, resource, sys, time
started = time.perf_counter()
sys.argv = ["train.py"]
import train
print(json.dumps({
    "seconds": time.perf_counter() - started,
    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "tensorflow_imported": "tensorflow" in sys.modules}))
"""


CHILDREN = {"eval": child_eval, "extract": child_extract}


# ----------------------------------------------------------------------------
# The parent: runs the children per tree and tabulates.


def run_child(tree: str, part: str) -> Dict[str, Any]:
  """Runs `part` in a fresh process on `tree`'s library; its result."""
  command = [sys.executable, "-c", _STARTUP_CODE] if part == "startup" else [sys.executable, os.path.abspath(__file__), f"--child={part}",
             f"--cache_dir={os.path.abspath(_CACHE_DIR.value)}",
             f"--train_dir={os.path.abspath(_TRAIN_DIR.value)}",
             f"--extract_videos={_EXTRACT_VIDEOS.value}",
             f"--eval_videos={_EVAL_VIDEOS.value}"]
  env = dict(os.environ, PYTHONPATH=tree)
  process = subprocess.run(command, cwd=tree, env=env, capture_output=True,
                           text=True, check=False)
  results = [line for line in process.stdout.splitlines()
             if line.startswith("{")]
  if process.returncode or not results:
    raise RuntimeError(f"{part} on {tree} failed:\n{process.stderr[-3000:]}")
  return json.loads(results[-1])


def write_videos(directory: str, count: int, frames: int, seed: int) -> int:
  """Writes `count` moving-texture videos in two class folders.

  Returns:
    The number of flow frame pairs they hold.
  """
  import cv2  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  for i in range(count):
    folder = os.path.join(directory, "a" if i % 2 == 0 else "b")
    os.makedirs(folder, exist_ok=True)
    texture = cv2.GaussianBlur(
        rng.uniform(0, 255, (400, 560)).astype(np.float32), (0, 0), 3)
    writer = cv2.VideoWriter(os.path.join(folder, f"v{i:02d}.avi"),
                             cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (320, 240))
    for t in range(frames):
      x, y = int(60 + 40 * np.sin(t / 7.0)), int(60 + 30 * np.cos(t / 9.0))
      gray = np.clip(texture[y:y + 240, x:x + 320], 0, 255).astype(np.uint8)
      writer.write(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    writer.release()
  return count * (frames - 1)


def run_tvl1(tree: str, data_dir: str, pairs: int) -> Dict[str, Any]:
  """Times prepare_data.py (defaults, TV-L1) on `data_dir` from `tree`."""
  cache = tempfile.mkdtemp(prefix="speed_tvl1_")
  command = [sys.executable, "prepare_data.py", f"--data_dir={data_dir}",
             f"--cache_dir={cache}", "--classes=a,b", "--flow_algorithm=tvl1",
             f"--short_side={_TVL1_SHORT_SIDE.value}", "--eval_fraction=0"]
  env = dict(os.environ, PYTHONPATH=tree)
  started = time.perf_counter()
  process = subprocess.Popen(command, cwd=tree, env=env,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
  _, status, usage = os.wait4(process.pid, 0)
  wall = time.perf_counter() - started
  stderr = process.stderr.read()
  process.stderr.close()
  shutil.rmtree(cache, ignore_errors=True)
  if os.waitstatus_to_exitcode(status):
    raise RuntimeError(f"prepare_data.py on {tree} failed:\n{stderr[-3000:]}")
  # wait4's rusage covers the process and its waited-for children (workers).
  return {"seconds": wall, "pairs_per_s": pairs / wall,
          "cores_busy": (usage.ru_utime + usage.ru_stime) / wall}


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  if _CHILD.value:
    print(json.dumps(CHILDREN[_CHILD.value]()))
    return
  trees = ([("before", os.path.abspath(_BEFORE.value))] if _BEFORE.value
           else []) + [("after" if _BEFORE.value else "this", ROOT)]
  rows = common.Rows()
  load_before = common.load_average()
  workdir = tempfile.mkdtemp(prefix="speed_")
  video_sets = []
  if "tvl1" in _PARTS.value:
    for spec in _TVL1_VIDEOS.value:
      count, frames = (int(x) for x in spec.split("x"))
      directory = os.path.join(workdir, spec)
      video_sets.append((spec, directory,
                         write_videos(directory, count, frames, seed=count)))
  try:
    for round_index in range(_ROUNDS.value):
      suffix = f" r{round_index + 1}" if _ROUNDS.value > 1 else ""
      for part in _PARTS.value:
        if part == "tvl1":
          for spec, directory, pairs in video_sets:
            for name, tree in trees:
              result = run_tvl1(tree, directory, pairs)
              base = f"tvl1 {spec} before{suffix}"
              rows.add("tvl1", f"tvl1 {spec} {name}{suffix}",
                       result["pairs_per_s"], "pairs/s",
                       base if name == "after" else None,
                       cores_busy=round(result["cores_busy"], 2),
                       seconds=round(result["seconds"], 1))
          continue
        for name, tree in trees:
          result = run_child(tree, part)
          base_of = (lambda row, s=suffix: f"{row} before{s}"
                     if name == "after" else None)
          if part == "eval":
            rows.add("eval", f"eval {name}{suffix}", result["videos_per_s"],
                     "videos/s", base_of("eval"),
                     top1=round(result["top1"], 4),
                     videos=result["videos"],
                     seconds=round(result["seconds"], 1))
          elif part == "extract":
            rows.add("extract", f"extract {name}{suffix}",
                     result["views_per_s"], "views/s", base_of("extract"),
                     views=result["views"], seconds=round(result["seconds"], 1))
            rows.add("extract", f"forward f32 {name}{suffix}",
                     result["forward_float32_views_per_s"], "views/s",
                     f"extract {name}{suffix}")
            rows.add("extract", f"forward bf16 {name}{suffix}",
                     result["forward_bfloat16_views_per_s"], "views/s",
                     f"extract {name}{suffix}")
          elif part == "startup":
            rows.add("startup", f"import train.py {name}{suffix}",
                     result["seconds"], "s", base_of("import train.py"),
                     peak_mb=round(result["peak_mb"]),
                     tensorflow=result["tensorflow_imported"])
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  rows.print_table(
      f"Speed around the model on {common.machine()}; load {load_before} -> "
      f"{common.load_average()}",
      note_fields=("top1", "cores_busy", "seconds", "peak_mb", "tensorflow",
                   "load"))
  rows.emit_json("speed", {"trees": dict(trees), "parts": _PARTS.value,
                           "rounds": _ROUNDS.value,
                           "cache_dir": _CACHE_DIR.value,
                           "train_dir": _TRAIN_DIR.value,
                           "load_before": load_before})


if __name__ == "__main__":
  app.run(main)
