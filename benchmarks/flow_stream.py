r"""Ablation of the flow stream on the demo: what makes it learn (issue 10).

From the repository root, on a prepared demo cache (the main job's):

  PYTHONPATH=. python3 benchmarks/flow_stream.py \
      --cache_dir=data/synthetic_cache --variants=today,adabn10,adabn2

Each variant sets up the Trainer with the demo's settings (configs/demo.cfg:
32 x 112 clips, Mixed_5 trainable, 4 cached views per training video, 300
steps, seed 0), extracts the frozen flow features of the same 640 training
views (`--feature_views` per video; the frozen RGB features once, and the
flow features once per set of batch-norm statistics), trains a flow-only and
a joint model on the cached features with the same seed, and evaluates both
on the held-out subjects as train.py does (whole videos, centre crop). It
reports top-1 per stream, what the frozen flow features look like (total
variance, spread of norms, between-class share of variance) and the extra
time of the variant (its set-up beyond today's, e.g. re-estimating batch-norm
statistics). Prints a table, then one JSON line.

Variants: `today` (the RGB checkpoint's batch-norm statistics), `adabnN`
(statistics re-estimated on N batches of training flow clips),
`bntrain` (today's, plus batch norm in training mode in Mixed_5 while
training), `lrX` (today's with X times the learning rate).
"""

import math
import os
import re
import tempfile
import time
from typing import Any, Dict, List, Tuple
from unittest import mock

from absl import app
from absl import flags

from benchmarks import common

common.quiet_tensorflow_logs()

# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import tensorflow as tf

from i3d import checkpoints
from i3d import config as config_lib
from i3d.data import cache as data_cache
from i3d.data import pipeline
from i3d.eval import metrics as eval_metrics
from i3d.train import features as train_features
from i3d.train import loop as train_loop
# pylint: enable=g-import-not-at-top,wrong-import-position

_CACHE_DIR = flags.DEFINE_string("cache_dir", "data/synthetic_cache",
                                 "The prepared demo cache.")
_VARIANTS = flags.DEFINE_list("variants", ["today", "adabn10"],
                              "Variants to run (see the module docstring).")
_JOINT_VARIANTS = flags.DEFINE_list(
    "joint_variants", None, "Variants that also train a joint model "
    "(default: all).")
_NUM_STEPS = flags.DEFINE_integer("num_steps", 300, "Training steps.")
_FEATURE_VIEWS = flags.DEFINE_integer(
    "feature_views", 4, "Augmented views per training video (the demo: 4; "
    "1 for a run 4x quicker).")
_RGB_CHECKPOINT = flags.DEFINE_string(
    "rgb_checkpoint", common.DEFAULT_RGB_CHECKPOINT, "Kinetics RGB weights.")


def train_on(trainer: train_loop.Trainer,
             features: Dict[str, np.ndarray]) -> None:
  """Runs the Trainer's fast path on the given frozen features."""
  with mock.patch.object(train_features, "training_features",
                         lambda stages, config: features):
    trainer.train()


def demo_config(train_dir: str, stream: str, **overrides: Any
                ) -> config_lib.TrainConfig:
  """configs/demo.cfg's training settings."""
  values = dict(
      cache_dir=_CACHE_DIR.value, train_dir=train_dir,
      classes=tuple(data_cache.read_cache(_CACHE_DIR.value).classes),
      stream=stream, num_frames=32, crop_size=112, trainable="mixed_5",
      feature_views=4, batch_size=16, learning_rate=0.03,
      lr_schedule="cosine", warmup_steps=10, per_stream_loss_weight=0.5,
      num_steps=_NUM_STEPS.value, checkpoint_every=100000,
      eval_every=100000, log_every=100, seed=0,
      rgb_checkpoint=_RGB_CHECKPOINT.value, export=False)
  values.update(overrides)
  return config_lib.TrainConfig(**values)


def parse_variant(name: str) -> Tuple[Dict[str, Any], float]:
  """(TrainConfig overrides, learning-rate factor) of a variant."""
  if name == "today":
    return {"flow_batch_norm_batches": 0}, 1.0
  if name == "bntrain":
    return {"flow_batch_norm_batches": 0, "batch_norm_training": True}, 1.0
  match = re.fullmatch(r"adabn(\d+)", name)
  if match:
    return {"flow_batch_norm_batches": int(match.group(1))}, 1.0
  match = re.fullmatch(r"lr([\d.]+)", name)
  if match:
    return {"flow_batch_norm_batches": 0}, float(match.group(1))
  raise app.UsageError(f"Unknown variant {name!r}")


def extract(trainer: train_loop.Trainer, streams: List[str]
            ) -> Dict[str, np.ndarray]:
  """The frozen outputs of the Trainer's own training views.

  Returns:
    {stream: [N * feature_views, ...], "label", "index": int32 [N *
    feature_views]}, the views of each training video in split order, as
    `train_features.training_features` gives them (not read from its store).
  """
  config = trainer.config
  info = data_cache.read_cache(config.cache_dir)
  entries = info.split_entries("train")
  views = train_features.frozen_features(
      {s: trainer.stages[s] for s in streams},
      pipeline.make_feature_views_dataset(
          info, entries, streams, config.num_frames, config.crop_size,
          _FEATURE_VIEWS.value, config.seed, config.batch_size),
      math.ceil(len(entries) * _FEATURE_VIEWS.value / config.batch_size),
      keep=("index",))
  views["label"] = np.array([entries[i].label_index for i in views["index"]],
                            np.int32)
  return views


def eval_features(trainer: train_loop.Trainer, streams: List[str]
                  ) -> Tuple[Dict[str, List[np.ndarray]], np.ndarray]:
  """Frozen outputs of the held-out videos (whole length, centre crop)."""
  config = trainer.config
  frozen = tf.function(lambda x, s: trainer.stages[s].frozen(x),
                       reduce_retracing=True)
  outputs: Dict[str, List[np.ndarray]] = {s: [] for s in streams}
  labels = []
  for element in pipeline.make_eval_dataset(
      config.cache_dir, streams=streams, crop_size=config.crop_size):
    for stream in streams:
      outputs[stream].append(frozen(element[stream], stream).numpy())
    labels.append(int(element["label"]))
  return outputs, np.array(labels)


def evaluate(trainer: train_loop.Trainer, features: Dict[str, List[np.ndarray]],
             labels: np.ndarray) -> Dict[str, float]:
  """Held-out top-1 of each stream and of their sum."""
  logits = {}
  for stream, stage in trainer.stages.items():
    logits[stream] = np.concatenate([
        stage.trainable(tf.constant(f), is_training=False,
                        batch_norm_training=False,
                        dropout_keep_prob=1.0).numpy()
        for f in features[stream]])
  metrics = eval_metrics.evaluate_streams(logits, labels,
                                        trainer.config.classes)
  return {name: m["top1"] for name, m in metrics["streams"].items()}


def describe(features: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
  """Total variance, spread of norms and between-class share of variance."""
  flat = features.reshape(len(features), -1).astype(np.float64)
  total = flat.var(axis=0).sum()
  norms = np.linalg.norm(flat, axis=1)
  means = np.stack([flat[labels == c].mean(axis=0) for c in np.unique(labels)])
  counts = np.array([np.sum(labels == c) for c in np.unique(labels)])
  between = (counts[:, None] * (means - flat.mean(axis=0))**2).sum() / len(flat)
  return {"total_variance": float(total),
          "norm_cv": float(norms.std() / norms.mean()),
          "between_class_share": float(between / total)}


def copy_flow_statistics(source: train_loop.Trainer,
                         target: train_loop.Trainer) -> None:
  """Gives target's flow stream source's flow weights (logits excluded)."""
  tensors = {n: v.numpy() for n, v in checkpoints.variable_map(
      source.model.streams["flow"], "Flow").items()}
  checkpoints.restore_tensors(target.model.streams["flow"], "flow", tensors,
                              include_logits=False, source="the joint run")


def main(argv):
  del argv  # Unused.
  rows = common.Rows()
  workdir = tempfile.mkdtemp(prefix="flow_stream_")
  rgb_train: Dict[str, np.ndarray] = {}
  flow_trains: Dict[int, np.ndarray] = {}
  rgb_eval = None
  flow_evals: Dict[int, List[np.ndarray]] = {}
  for variant in _VARIANTS.value:
    overrides, lr_factor = parse_variant(variant)
    lr = 0.03 * lr_factor
    started = time.monotonic()
    joint = train_loop.Trainer(demo_config(
        os.path.join(workdir, variant, "joint"), "joint", learning_rate=lr,
        **overrides))
    setup = time.monotonic() - started
    # RGB features once; flow features once per set of statistics.
    batches = overrides["flow_batch_norm_batches"]
    streams = ([] if rgb_train else ["rgb"]) + (
        [] if batches in flow_trains else ["flow"])
    started = time.monotonic()
    train = extract(joint, streams) if streams else {}
    extract_s = time.monotonic() - started
    if "rgb" in train:
      rgb_train = {k: train[k] for k in ("rgb", "label", "index")}
    if "flow" in train:
      assert np.array_equal(train["index"], rgb_train["index"]), "views differ"
      flow_trains[batches] = train["flow"]
    features = dict(rgb_train, flow=flow_trains[batches])
    eval_streams = [] if batches in flow_evals else ["flow"]
    if rgb_eval is None:
      eval_streams.append("rgb")
    if eval_streams:
      frozen_eval, labels = eval_features(joint, eval_streams)
    else:
      frozen_eval = {}
    rgb_eval = frozen_eval.get("rgb", rgb_eval)
    flow_evals.setdefault(batches, frozen_eval.get("flow"))
    frozen_eval = {"rgb": rgb_eval, "flow": flow_evals[batches]}
    stats = describe(features["flow"], features["label"])
    rgb_stats = describe(features["rgb"], features["label"])
    results: Dict[str, Any] = {
        "variant": variant, "setup_s": setup, "extract_s": extract_s, **stats,
        **{f"rgb_{k}": v for k, v in rgb_stats.items()}}
    print(results, flush=True)
    if _JOINT_VARIANTS.value is None or variant in _JOINT_VARIANTS.value:
      started = time.monotonic()
      train_on(joint, features)
      results["joint_train_s"] = time.monotonic() - started
      results.update({f"joint_run_{k}": v for k, v in
                      evaluate(joint, frozen_eval, labels).items()})
      print(results, flush=True)
    flow = train_loop.Trainer(demo_config(
        os.path.join(workdir, variant, "flow"), "flow", learning_rate=lr,
        **dict(overrides, flow_batch_norm_batches=0)))
    copy_flow_statistics(joint, flow)
    started = time.monotonic()
    train_on(flow, {k: features[k] for k in ("flow", "label", "index")})
    results["flow_train_s"] = time.monotonic() - started
    results["flow_only_top1"] = evaluate(flow, frozen_eval, labels)["flow"]
    print(results, flush=True)
    for key, value in results.items():
      if key != "variant":
        rows.add(variant, f"{variant}/{key}", float(value), "")
  for row in rows.rows:
    print(f"{row['name']:45s} {row['value']:.4f}")
  rows.emit_json("flow_stream", {"variants": _VARIANTS.value,
                                 "num_steps": _NUM_STEPS.value,
                                 "cache_dir": _CACHE_DIR.value})


if __name__ == "__main__":
  app.run(main)
