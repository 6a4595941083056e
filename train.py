r"""Trains the two-stream I3D on exercise videos, from Kinetics weights.

The main job, on a fresh clone (generates the synthetic demo data, fetches
the Kinetics weights, prepares the data, trains, evaluates held-out subjects):
  python train.py --flagfile=configs/demo.cfg

On your own videos (one folder per class, or a manifest CSV):
  python train.py --stream=joint --data_dir=videos/ --cache_dir=cache/ \
      --train_dir=runs/mine --flagfile=configs/gpu_real.cfg

Rerunning the same command resumes: prepared videos, cached features and the
latest checkpoint are reused. SIGTERM saves a checkpoint and exits cleanly.
"""

import os
import sys
from typing import Optional, Sequence

from absl import app
from absl import flags
from absl import logging

from i3d import config as config_lib
from i3d.data import cache as data_cache
from i3d.data import sources as data_sources
from i3d.eval import evaluate as evaluation
from i3d.eval import reports as eval_reports
from i3d import export
from i3d import streams as streams_lib
from i3d.train import checkpointer as train_checkpointer
from i3d.train import loop as train_loop
from i3d.video import preprocess as video_preprocess
from i3d_demo import synthetic

_DEFAULTS = config_lib.TrainConfig(cache_dir="", train_dir="")

# Data.
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Videos in one sub-folder per class.")
_MANIFEST = flags.DEFINE_string(
    "manifest", None, "CSV with columns path,label[,subject][,split].")
_CACHE_DIR = flags.DEFINE_string(
    "cache_dir", None, "The prepared dataset (made by prepare_data.py, or "
    "here when --prepare).")
_CLASSES = flags.DEFINE_string(
    "classes", None, "Class list: 'exercise' (default), a file, or "
    "comma-separated names.")
_PREPARE = flags.DEFINE_bool(
    "prepare", True, "Prepare (or complete) the cache from --data_dir or "
    "--manifest before training; already prepared videos are skipped.")
_SHORT_SIDE = flags.DEFINE_integer(
    "short_side", 256, "Frames are resized so the shorter side has this "
    "many pixels (DeepMind: 256).")
_FLOW_ALGORITHM = flags.DEFINE_enum(
    "flow_algorithm", "tvl1", ["tvl1", "dis"],
    "Optical flow algorithm; Kinetics flow weights expect tvl1.")
_PREPARE_WORKERS = flags.DEFINE_integer(
    "prepare_workers", os.cpu_count() or 1, "Processes preparing videos.")
_EVAL_FRACTION = flags.DEFINE_float(
    "eval_fraction", 0.2, "Fraction of subjects (or videos) held out.")
_SYNTHETIC_CLIPS = flags.DEFINE_integer(
    "synthetic_clips_per_class", 0, "If > 0 and --manifest does not exist, "
    "generate the synthetic demo dataset there first (see i3d_demo.synthetic).")

# Model and training.
_STREAM = flags.DEFINE_enum("stream", _DEFAULTS.stream,
                            ["rgb", "flow", "joint"], "Streams to train.")
_TRAIN_DIR = flags.DEFINE_string("train_dir", "runs/default",
                                 "Checkpoints, summaries, exports, metrics.")
_NUM_FRAMES = flags.DEFINE_integer("num_frames", _DEFAULTS.num_frames,
                                   "Frames per training clip (paper: 64).")
_CROP_SIZE = flags.DEFINE_integer("crop_size", _DEFAULTS.crop_size,
                                  "Square crop side (paper: 224).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", _DEFAULTS.batch_size,
                                   "Global batch size.")
_TRAINABLE = flags.DEFINE_enum(
    "trainable", _DEFAULTS.trainable, list(config_lib.TRAINABLE_BOUNDARIES),
    "What trains: logits only, the Mixed_5 blocks and logits, Mixed_4 "
    "onwards, or all.")
_BATCH_NORM_TRAINING = flags.DEFINE_bool(
    "batch_norm_training", _DEFAULTS.batch_norm_training,
    "Batch norm of the trainable blocks uses and updates batch statistics; "
    "leave off for small batches.")
_LEARNING_RATE = flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate,
                                    "Peak learning rate.")
_LR_SCHEDULE = flags.DEFINE_enum("lr_schedule", _DEFAULTS.lr_schedule,
                                 ["cosine", "constant"], "After warm-up.")
_WARMUP_STEPS = flags.DEFINE_integer("warmup_steps", _DEFAULTS.warmup_steps,
                                     "Linear learning-rate warm-up.")
_MOMENTUM = flags.DEFINE_float("momentum", _DEFAULTS.momentum,
                               "SGD momentum (paper: 0.9).")
_WEIGHT_DECAY = flags.DEFINE_float("weight_decay", _DEFAULTS.weight_decay,
                                   "L2 on kernels (paper: 1e-7).")
_DROPOUT_KEEP_PROB = flags.DEFINE_float(
    "dropout_keep_prob", _DEFAULTS.dropout_keep_prob,
    "Keep probability before the logits (paper: 0.5).")
_LABEL_SMOOTHING = flags.DEFINE_float("label_smoothing",
                                      _DEFAULTS.label_smoothing,
                                      "Label smoothing of the loss.")
_PER_STREAM_LOSS_WEIGHT = flags.DEFINE_float(
    "per_stream_loss_weight", _DEFAULTS.per_stream_loss_weight,
    "Adds this times each stream's own loss to the joint loss.")
_NUM_STEPS = flags.DEFINE_integer("num_steps", _DEFAULTS.num_steps,
                                  "Training steps.")
_NUM_EPOCHS = flags.DEFINE_float(
    "num_epochs", None, "If set, overrides --num_steps: epochs over the "
    "training videos (one clip per video per epoch).")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", _DEFAULTS.eval_every,
                                   "Steps between evaluations.")
_CHECKPOINT_EVERY = flags.DEFINE_integer(
    "checkpoint_every", _DEFAULTS.checkpoint_every, "Steps between saves.")
_KEEP_CHECKPOINTS = flags.DEFINE_integer(
    "keep_checkpoints", _DEFAULTS.keep_checkpoints, "Checkpoints kept.")
_LOG_EVERY = flags.DEFINE_integer("log_every", _DEFAULTS.log_every,
                                  "Steps between log lines and summaries.")
_SEED = flags.DEFINE_integer("seed", _DEFAULTS.seed, "Seed of data order, "
                             "augmentation and splits.")
_RGB_CHECKPOINT = flags.DEFINE_string(
    "rgb_checkpoint", None, "DeepMind-layout RGB checkpoint; default "
    "checkpoints/rgb_scratch (fetched if absent).")
_FLOW_CHECKPOINT = flags.DEFINE_string(
    "flow_checkpoint", None, "DeepMind-layout flow checkpoint (e.g. "
    "flow_imagenet); default: cross-modality init from the RGB weights.")
_FLOW_BATCH_NORM_BATCHES = flags.DEFINE_integer(
    "flow_batch_norm_batches", _DEFAULTS.flow_batch_norm_batches,
    "Without --flow_checkpoint, batches of training flow clips on which the "
    "cross-modality initialised flow stream re-estimates its batch-norm "
    "statistics (0 keeps the RGB checkpoint's).")
_FEATURE_CACHE = flags.DEFINE_bool(
    "feature_cache", _DEFAULTS.feature_cache, "With a frozen backbone part, "
    "compute its outputs once for --feature_views views per video and train "
    "on them.")
_FEATURE_VIEWS = flags.DEFINE_integer(
    "feature_views", _DEFAULTS.feature_views,
    "Augmented views per training video in the feature cache.")
_EVAL_NUM_FRAMES = flags.DEFINE_integer(
    "eval_num_frames", None, "Frames per evaluation clip; default the whole "
    "video (DeepMind's test protocol).")
_EVAL_NUM_CLIPS = flags.DEFINE_integer("eval_num_clips", 1,
                                       "Evenly spaced clips per video.")
_EVAL_NUM_CROPS = flags.DEFINE_integer(
    "eval_num_crops", 1, "Spatial crops per clip: 1 (centre) or 3.")
_STRATEGY = flags.DEFINE_enum(
    "strategy", _DEFAULTS.strategy, ["default", "mirrored", "multi_worker"],
    "tf.distribute strategy: one device, all local devices, or the workers "
    "of TF_CONFIG.")
_MIXED_PRECISION = flags.DEFINE_bool(
    "mixed_precision", False, "float16 compute on GPU (graph rewrite) with a "
    "static loss scale.")
_EXPORT = flags.DEFINE_bool(
    "export", True, "After training, write the name-based checkpoint and the "
    "SavedModel to train_dir/export.")


def _maybe_generate_demo_data() -> Optional[str]:
  """Generates the synthetic dataset where --manifest points, if asked."""
  if _SYNTHETIC_CLIPS.value <= 0:
    return _MANIFEST.value
  if not _MANIFEST.value:
    raise app.UsageError("--synthetic_clips_per_class needs --manifest")
  return synthetic.generate_dataset(
      os.path.dirname(os.path.abspath(_MANIFEST.value)),
      clips_per_class=_SYNTHETIC_CLIPS.value, seed=_SEED.value,
      num_workers=_PREPARE_WORKERS.value)


def _prepare(manifest: Optional[str], streams: Sequence[str]) -> None:
  if not (_DATA_DIR.value or manifest):
    raise app.UsageError("--prepare needs --data_dir or --manifest "
                         "(or use --noprepare with a prepared --cache_dir)")
  report = data_cache.prepare_dataset(
      _CACHE_DIR.value, data_dir=_DATA_DIR.value,
      manifest=None if _DATA_DIR.value else manifest,
      classes=_CLASSES.value, streams=streams,
      config=video_preprocess.PreprocessConfig(short_side=_SHORT_SIDE.value,
                                    flow_algorithm=_FLOW_ALGORITHM.value),
      num_workers=_PREPARE_WORKERS.value, eval_fraction=_EVAL_FRACTION.value,
      seed=_SEED.value)
  if not report.ok:
    logging.warning("Training on the %d videos that were prepared; see the "
                    "failures above", report.num_prepared + report.num_cached)


def _config(classes: Sequence[str], num_train_videos: int
            ) -> config_lib.TrainConfig:
  num_steps = _NUM_STEPS.value
  if _NUM_EPOCHS.value is not None:
    num_steps = max(1, round(_NUM_EPOCHS.value * num_train_videos /
                             _BATCH_SIZE.value))
  return config_lib.TrainConfig(
      cache_dir=_CACHE_DIR.value, train_dir=_TRAIN_DIR.value,
      classes=tuple(classes), stream=_STREAM.value,
      num_frames=_NUM_FRAMES.value, crop_size=_CROP_SIZE.value,
      batch_size=_BATCH_SIZE.value, trainable=_TRAINABLE.value,
      batch_norm_training=_BATCH_NORM_TRAINING.value,
      learning_rate=_LEARNING_RATE.value, lr_schedule=_LR_SCHEDULE.value,
      warmup_steps=_WARMUP_STEPS.value, momentum=_MOMENTUM.value,
      weight_decay=_WEIGHT_DECAY.value,
      dropout_keep_prob=_DROPOUT_KEEP_PROB.value,
      label_smoothing=_LABEL_SMOOTHING.value,
      per_stream_loss_weight=_PER_STREAM_LOSS_WEIGHT.value,
      num_steps=num_steps, eval_every=_EVAL_EVERY.value,
      checkpoint_every=_CHECKPOINT_EVERY.value,
      keep_checkpoints=_KEEP_CHECKPOINTS.value, log_every=_LOG_EVERY.value,
      seed=_SEED.value, rgb_checkpoint=_RGB_CHECKPOINT.value,
      flow_checkpoint=_FLOW_CHECKPOINT.value,
      flow_batch_norm_batches=_FLOW_BATCH_NORM_BATCHES.value,
      feature_cache=_FEATURE_CACHE.value, feature_views=_FEATURE_VIEWS.value,
      eval_num_frames=_EVAL_NUM_FRAMES.value,
      eval_num_clips=_EVAL_NUM_CLIPS.value,
      eval_num_crops=_EVAL_NUM_CROPS.value, strategy=_STRATEGY.value,
      mixed_precision=_MIXED_PRECISION.value, export=_EXPORT.value)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not _CACHE_DIR.value:
    raise app.UsageError("--cache_dir is required")
  streams = streams_lib.parse_streams(_STREAM.value)
  try:
    if _PREPARE.value:
      _prepare(_maybe_generate_demo_data(), streams)
    info = data_cache.read_cache(_CACHE_DIR.value)
    config = _config(info.classes, len(info.split_entries("train")))
    config_lib.save_config(config)
    trainer = train_loop.Trainer(config)

    def evaluate(step: int) -> dict:
      del step  # Unused.
      return evaluation.evaluate_model(trainer.model, config).metrics

    result = trainer.train(evaluate_fn=evaluate)
    if result["stopped_early"]:
      logging.info("Stopped at step %d; rerun the same command to resume",
                   result["step"])
      return
    metrics = evaluate(result["step"])
    trainer.log_eval(metrics, result["step"])
    eval_reports.write_metrics_json(
        os.path.join(trainer.checkpointer.worker_dir, evaluation.METRICS_FILE), metrics)
    print(eval_reports.format_report(metrics))
    if config.export:
      export.export_all(trainer.model, trainer.checkpointer.worker_dir, config.classes,
                        config.crop_size)
  except (train_checkpointer.TrainingError, data_sources.DatasetError, ValueError,
          FileNotFoundError) as e:
    logging.error("%s", e)
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
