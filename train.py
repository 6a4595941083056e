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

import dataclasses
import os
import sys
from typing import Optional, Sequence

from absl import app
from absl import flags
from absl import logging

# Only TensorFlow-free modules here: the processes that generate and prepare
# videos are spawned and re-import this script (3 s and 600 MB each with
# TensorFlow, 0.1 s without); main() imports the rest.
from i3d import config as config_lib
from i3d.data import sources as data_sources
from i3d.eval import reports as eval_reports
from i3d_demo import synthetic

# The settings: their types, defaults, ranges and docs are in i3d.config.
config_lib.define_flags(config_lib.PrepareConfig)
config_lib.define_flags(config_lib.PreprocessConfig)
config_lib.define_flags(config_lib.TrainConfig)

# Options of this command.
_PREPARE = flags.DEFINE_bool(
    "prepare", True, "Prepare (or complete) the cache from --data_dir or "
    "--manifest before training; already prepared videos are skipped.")
_SYNTHETIC_CLIPS = flags.DEFINE_integer(
    "synthetic_clips_per_class", 0, "If > 0, first generate (or complete) "
    "the synthetic demo dataset in --manifest's directory, with "
    "--synthetic_seed as its seed (see i3d_demo.synthetic); one made with "
    "other settings is refused.",
    lower_bound=0)
_SYNTHETIC_SEED = flags.DEFINE_integer(
    "synthetic_seed", 0, "Seed of the synthetic demo dataset (clips, "
    "subjects, scenes); --seed seeds the training.", lower_bound=0)


def _maybe_generate_demo_data(
    prepare: config_lib.PrepareConfig) -> Optional[str]:
  """Generates the synthetic dataset where --manifest points, if asked."""
  if _SYNTHETIC_CLIPS.value <= 0:
    return prepare.manifest
  if not prepare.manifest:
    raise app.UsageError("--synthetic_clips_per_class needs --manifest")
  return synthetic.generate_dataset(
      os.path.dirname(os.path.abspath(prepare.manifest)),
      clips_per_class=_SYNTHETIC_CLIPS.value, seed=_SYNTHETIC_SEED.value,
      num_workers=prepare.prepare_workers)


def _prepare(prepare: config_lib.PrepareConfig,
             preprocess: config_lib.PreprocessConfig,
             config: config_lib.TrainConfig) -> None:
  from i3d.data import cache as data_cache  # pylint: disable=g-import-not-at-top
  manifest = _maybe_generate_demo_data(prepare)
  if not (prepare.data_dir or manifest):
    raise app.UsageError("--prepare needs --data_dir or --manifest "
                         "(or use --noprepare with a prepared --cache_dir)")
  report = data_cache.prepare_dataset(
      config.cache_dir, data_dir=prepare.data_dir,
      manifest=None if prepare.data_dir else manifest,
      classes=prepare.classes, streams=config.streams, config=preprocess,
      num_workers=prepare.prepare_workers,
      eval_fraction=prepare.eval_fraction, seed=config.seed)
  if not report.ok:
    logging.warning("Training on the %d videos that were prepared; see the "
                    "failures above", report.num_prepared + report.num_cached)


def _num_steps(config: config_lib.TrainConfig, num_train_videos: int) -> int:
  if config.num_epochs is None:
    return config.num_steps
  return max(1, round(config.num_epochs * num_train_videos /
                      config.batch_size))


def _cross_validate(config: config_lib.TrainConfig) -> None:
  """Runs or resumes cross-validation by subject and prints its report."""
  # pylint: disable=g-import-not-at-top
  from i3d.eval import cross_validation as cv_reports
  from i3d.train import cross_validation
  # pylint: enable=g-import-not-at-top
  outcome = cross_validation.run(config)
  if outcome is None:
    logging.info("Stopped; rerun the same command to resume")
    return
  report, curve = outcome
  print(cv_reports.format_report(report))
  if curve:
    print("\n" + cv_reports.format_learning_curve(curve))


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not flags.FLAGS.cache_dir:
    raise app.UsageError("--cache_dir is required")
  try:
    # Every setting is checked here, before any work: each flag on its own
    # when parsed, the combinations (e.g. the crop in the frames) now.
    prepare = config_lib.from_flags(config_lib.PrepareConfig)
    preprocess = config_lib.from_flags(config_lib.PreprocessConfig)
    config = config_lib.from_flags(
        config_lib.TrainConfig,
        preprocess=preprocess if _PREPARE.value else None)
  except ValueError as e:
    sys.exit(f"error: {e}")
  # pylint: disable=g-import-not-at-top
  from i3d import checkpoints
  from i3d import export
  from i3d.data import cache as data_cache
  from i3d.eval import evaluate as evaluation
  from i3d.train import checkpointer as train_checkpointer
  from i3d.train import loop as train_loop
  # pylint: enable=g-import-not-at-top
  try:
    # A checkpoint named by one of its files or its directory is resolved
    # before any work, so that a wrong path stops the run with one line and
    # config.json records the prefix.
    config = dataclasses.replace(config, **{
        name: checkpoints.checkpoint_prefix(getattr(config, name))
        for name in ("rgb_checkpoint", "flow_checkpoint")
        if getattr(config, name)})
    if _PREPARE.value:
      _prepare(prepare, preprocess, config)
    info = data_cache.read_cache(config.cache_dir)
    # The run saves the cache's preprocessing: its model is then always fed
    # the way it was trained, wherever the cache goes.
    config = dataclasses.replace(
        config, classes=tuple(info.classes), preprocess=info.config,
        training_data=info.split_fingerprint("train"),
        num_steps=_num_steps(config, len(info.split_entries("train"))))
    train_checkpointer.check_training_data(config)
    if config.cross_validation_folds:
      _cross_validate(config)
      return
    config_lib.save_config(config)
    trainer = train_loop.Trainer(config)
    held_out = bool(info.split_entries("eval"))
    if not held_out:
      # Said now, not after the training: the split has no videos to score.
      logging.warning(
          "%s has no video in its eval split (too few subjects, or "
          "prepared with --eval_fraction=0): training without evaluation",
          config.cache_dir)

    def evaluate(step: int) -> dict:
      del step  # Unused.
      return evaluation.evaluate_model(trainer.model, config).metrics

    result = trainer.train(evaluate_fn=evaluate if held_out else None)
    if result["stopped_early"]:
      logging.info("Stopped at step %d; rerun the same command to resume",
                   result["step"])
      return
    if held_out:
      metrics = evaluate(result["step"])
      trainer.log_eval(metrics, result["step"])
      eval_reports.write_metrics_json(
          os.path.join(trainer.checkpointer.worker_dir,
                       evaluation.METRICS_FILE), metrics)
      print(eval_reports.format_report(metrics))
    if config.export:
      export.export_all(trainer.model, trainer.checkpointer.worker_dir,
                        config.classes, config.crop_size,
                        config.preprocessing())
  except (train_checkpointer.TrainingError, data_sources.DatasetError,
          ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  app.run(main)
