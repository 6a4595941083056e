r"""Proxy for transfer to real people: held-out rendering conditions.

From the repository root:

  PYTHONPATH=. nice -n 5 python3 benchmarks/synthetic_transfer.py   # ~5 min

Real labelled videos are kept aside, so this measures what synthetic training
does on conditions it never saw. Three synthetic sets are generated:
  train      seed 0 under `TRAIN` conditions (side-ish views, low cameras,
             mid-sized bodies, plain and home rooms, 4:3 and 3:4 frames);
  in-cond.   seed 1 under the same conditions: new subjects and scenes;
  held-out   seed 2 under `HELD_OUT` conditions never seen in training
             (three-quarter and front views, high cameras, small, tall and
             heavy bodies, gyms, 16:9 and 9:16 frames).
A model trained on `train` (the Trainer, frozen Kinetics backbone, cached
features) is evaluated on both test sets; the held-out top-1 and its gap to
the in-condition top-1 are the proxy for new people in new rooms.

`--train_manifest` trains on videos made elsewhere instead, e.g. by an older
generator (check out its commit, run this there with `--workdir`, then point
this run at `<workdir>/train/manifest.csv`), so that two generators are
compared on the same held-out set. `--train_override` changes the training
conditions only (e.g. `'{"views": [[-35, 0]]}'`: what do views towards
the front add?).
`--workdir` keeps the videos, caches, features and weights for reruns. Prints
a table, then one JSON line.
"""

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from typing import Any, Dict, Mapping, Sequence

from absl import app
from absl import flags

from benchmarks import common

common.quiet_tensorflow_logs()

# pylint: disable=g-import-not-at-top,wrong-import-position
from i3d import config as config_lib
from i3d import streams as streams_lib
from i3d.data import cache as data_cache
from i3d.eval import evaluate as evaluation
from i3d.train import loop as train_loop
from i3d.video import preprocess as video_preprocess
from i3d_demo import synthetic
# pylint: enable=g-import-not-at-top,wrong-import-position

# The conditions training never sees: three-quarter and front views, high
# cameras, small, tall and heavy bodies, gyms, 16:9 and 9:16 frames. Every
# other field keeps the generator's defaults. Fields that an older generator
# lacks are left out, so that this runs on its commit too.
HELD_OUT = {
    "views": ((40.0, 65.0), (75.0, 90.0)),
    "elevations": ((18.0, 32.0),),
    "heights": ((1.45, 1.6), (1.85, 2.0)),
    "girths": ((1.1, 1.45),),
    "rooms": ("gym",),
    "aspects": (16 / 9, 9 / 16),
}


def _minus(default: Sequence[Any], held_out: Sequence[Any]) -> tuple[Any, ...]:
  """The default values or (low, high) intervals outside the held-out ones."""
  if not isinstance(default[0], tuple):
    return tuple(value for value in default if value not in held_out)
  kept = list(default)
  for cut_low, cut_high in held_out:
    kept = [piece for low, high in kept for piece in (
        (low, min(high, cut_low)), (max(low, cut_high), high))
            if piece[1] > piece[0]]
  return tuple(kept)


def _as_tuples(value: Any) -> Any:
  """JSON lists as the tuples `Conditions` holds."""
  return tuple(map(_as_tuples, value)) if isinstance(value, list) else value


def conditions(train_override: Mapping[str, Any] | None = None
               ) -> tuple[synthetic.Conditions, synthetic.Conditions]:
  """The training and held-out conditions: disjoint on every held-out field.

  Args:
    train_override: `Conditions` fields whose values replace the defaults
      for training (before the held-out values are removed), e.g. to turn
      one kind of randomisation off and measure what it adds.

  Returns:
    TRAIN, the generator's defaults minus the held-out values, and HELD_OUT,
    the defaults with the held-out values in their place.
  """
  defaults = synthetic.Conditions()
  train = dataclasses.replace(defaults, **{
      k: _as_tuples(v) for k, v in (train_override or {}).items()})
  return (dataclasses.replace(train, **{
      k: _minus(getattr(train, k), v) for k, v in HELD_OUT.items()}),
          dataclasses.replace(defaults, **HELD_OUT))

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Keeps the videos and caches (default: a temporary "
    "directory, removed afterwards).")
_TRAIN_MANIFEST = flags.DEFINE_string(
    "train_manifest", None, "Train on these videos instead of generating "
    "them (e.g. from another generator version).")
_TRAIN_OVERRIDE = flags.DEFINE_string(
    "train_override", None, "JSON of Conditions fields for the training set, "
    "e.g. '{\"views\": [[-35, 0]]}' to measure what views towards the front "
    "add (the test sets stay the same).")
_CLIPS_PER_CLASS = flags.DEFINE_integer("clips_per_class", 12,
                                        "Training clips per class.")
_TEST_CLIPS_PER_CLASS = flags.DEFINE_integer(
    "test_clips_per_class", 5, "Clips per class of each test set.")
_STREAM = flags.DEFINE_enum("stream", "rgb", ["rgb", "flow", "joint"],
                            "Streams.")
_TRAINABLE = flags.DEFINE_enum("trainable", "logits", ["logits", "mixed_5"],
                               "What trains (the rest is frozen and cached).")
_NUM_FRAMES = flags.DEFINE_integer("num_frames", 32, "Frames per clip.")
_CROP_SIZE = flags.DEFINE_integer("crop_size", 112, "Crop side.")
_SHORT_SIDE = flags.DEFINE_integer("short_side", 128, "Frame short side.")
_FEATURE_VIEWS = flags.DEFINE_integer("feature_views", 2,
                                      "Cached views per training video.")
_EVAL_NUM_FRAMES = flags.DEFINE_integer(
    "eval_num_frames", 32, "Frames of the one centre clip evaluated per test "
    "video; 0 for the whole video (several times slower: every length is "
    "traced anew).")
_EVAL_NUM_CROPS = flags.DEFINE_integer(
    "eval_num_crops", 1, "Crops per test clip: 1 (centre) or 3 (start, "
    "centre and end of the longer side: the whole of a portrait or wide "
    "frame). The trained weights are reused.")
flags.register_validator("eval_num_crops", lambda value: value in (1, 3),
                         message="--eval_num_crops must be 1 or 3")
_NUM_STEPS = flags.DEFINE_integer("num_steps", 200, "Training steps.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", 0.05, "Peak rate.")
_RGB_CHECKPOINT = flags.DEFINE_string(
    "rgb_checkpoint", common.DEFAULT_RGB_CHECKPOINT, "Kinetics RGB weights.")


def make_cache(workdir: str, name: str, seed: int, clips_per_class: int,
               conditions: synthetic.Conditions, streams: Sequence[str],
               manifest: str | None = None) -> str:
  """Generates (unless `manifest` is given) and prepares one set, all "train"."""
  if manifest is None:
    manifest = synthetic.generate_dataset(
        os.path.join(workdir, name), clips_per_class=clips_per_class,
        seed=seed, num_workers=os.cpu_count() or 1, conditions=conditions)
  cache_dir = os.path.join(workdir, f"{name}_cache_{_SHORT_SIDE.value}")
  report = data_cache.prepare_dataset(
      cache_dir, manifest=manifest, streams=streams,
      config=video_preprocess.PreprocessConfig(short_side=_SHORT_SIDE.value,
                                    flow_algorithm="dis"),
      num_workers=os.cpu_count() or 1, eval_fraction=0.0)
  assert report.ok, report.summary()
  return cache_dir


def _train_set_name(override: Mapping[str, Any]) -> str:
  """The training set's directory name: one per override or given set."""
  if _TRAIN_MANIFEST.value:
    return "train_given"
  if not override:
    return "train"
  text = json.dumps(override, sort_keys=True)
  return "train_" + hashlib.sha256(text.encode()).hexdigest()[:8]


def run(workdir: str) -> Dict[str, Any]:
  """Trains on the train set and evaluates both test sets."""
  streams = streams_lib.parse_streams(_STREAM.value)
  started = time.monotonic()
  override = json.loads(_TRAIN_OVERRIDE.value or "{}")
  train, held_out = conditions(override)
  caches = {
      # A given training set gets its own cache, so that the test sets of a
      # kept workdir can be reused with it.
      "train": make_cache(workdir, _train_set_name(override), 0, _CLIPS_PER_CLASS.value, train,
                          streams, _TRAIN_MANIFEST.value),
      # The default training conditions, whatever the override: both test
      # sets stay the same across ablations.
      "in-condition": make_cache(workdir, "in_condition", 1,
                                 _TEST_CLIPS_PER_CLASS.value, conditions()[0],
                                 streams),
      "held-out": make_cache(workdir, "held_out", 2,
                             _TEST_CLIPS_PER_CLASS.value, held_out, streams),
  }
  generate_s = time.monotonic() - started
  # Named by what decides the weights, so that a rerun over a kept workdir
  # resumes from the cached features and the final checkpoint.
  run_name = (f"run_{os.path.basename(caches['train'])}_{_STREAM.value}_"
              f"{_TRAINABLE.value}_{_NUM_FRAMES.value}x{_CROP_SIZE.value}_"
              f"v{_FEATURE_VIEWS.value}_s{_NUM_STEPS.value}")
  config = config_lib.TrainConfig(
      cache_dir=caches["train"],
      train_dir=os.path.join(workdir, run_name),
      classes=data_cache.read_cache(caches["train"]).classes,
      stream=_STREAM.value, num_frames=_NUM_FRAMES.value,
      crop_size=_CROP_SIZE.value, batch_size=16, trainable=_TRAINABLE.value,
      learning_rate=_LEARNING_RATE.value, warmup_steps=10,
      num_steps=_NUM_STEPS.value, eval_every=10**9,
      checkpoint_every=10**9, log_every=50, feature_views=_FEATURE_VIEWS.value,
      rgb_checkpoint=common.rgb_checkpoint(_RGB_CHECKPOINT.value, workdir),
      eval_num_frames=_EVAL_NUM_FRAMES.value or None,
      eval_num_crops=_EVAL_NUM_CROPS.value, export=False)
  trainer = train_loop.Trainer(config)
  trainer.train()
  train_s = time.monotonic() - started - generate_s
  top1 = {}
  for name in ("in-condition", "held-out"):
    metrics = evaluation.evaluate_model(trainer.model, config, caches[name],
                                     split=None).metrics
    top1[name] = {stream: metrics["streams"][stream]["top1"]
                  for stream in metrics["streams"]}
  return {"top1": top1, "generate_s": generate_s, "train_s": train_s,
          "eval_s": time.monotonic() - started - generate_s - train_s}


def main(argv: Sequence[str]) -> None:
  del argv  # Unused.
  if _WORKDIR.value:
    os.makedirs(_WORKDIR.value, exist_ok=True)
    result = run(_WORKDIR.value)
  else:
    with tempfile.TemporaryDirectory() as workdir:
      result = run(workdir)
  rows = common.Rows()
  source = (f"train_manifest={_TRAIN_MANIFEST.value}" if _TRAIN_MANIFEST.value
            else f"generator v{synthetic.GENERATOR_VERSION}")
  for stream, in_condition in result["top1"]["in-condition"].items():
    rows.add("transfer", f"{stream} top-1, in-condition", in_condition, "top-1")
    rows.add("transfer", f"{stream} top-1, held-out conditions",
             result["top1"]["held-out"][stream], "top-1",
             baseline=f"{stream} top-1, in-condition")
  for stage in ("generate", "train", "eval"):
    rows.add("time", f"{stage} (s)", result[f"{stage}_s"], "s")
  rows.print_table(f"Synthetic transfer proxy ({source}; {_STREAM.value}, "
                   f"trainable={_TRAINABLE.value}, {_NUM_FRAMES.value}x"
                   f"{_CROP_SIZE.value}px)")
  rows.emit_json("synthetic_transfer", settings={
      "source": source, "stream": _STREAM.value,
      "trainable": _TRAINABLE.value, "num_frames": _NUM_FRAMES.value,
      "crop_size": _CROP_SIZE.value, "short_side": _SHORT_SIDE.value,
      "clips_per_class": _CLIPS_PER_CLASS.value,
      "test_clips_per_class": _TEST_CLIPS_PER_CLASS.value,
      "num_steps": _NUM_STEPS.value, "feature_views": _FEATURE_VIEWS.value,
      "eval_num_frames": _EVAL_NUM_FRAMES.value,
      "eval_num_crops": _EVAL_NUM_CROPS.value,
      "train_override": _TRAIN_OVERRIDE.value,
      "conditions": [dataclasses.asdict(c) for c in conditions(
          json.loads(_TRAIN_OVERRIDE.value or "{}"))]})


if __name__ == "__main__":
  app.run(main)
