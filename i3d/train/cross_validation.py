"""K-fold cross-validation by subject: one training per fold, one report.

`run` trains one model per fold (`i3d.data.splits.assign_folds`: each
subject held out by exactly one fold), evaluates each on its held-out
subjects and on its own training videos, and writes the report of
`i3d.eval.cross_validation`. Optionally it trains each fold again on a
fraction of its training subjects for a learning curve.

What is the same across folds is done once: the prepared cache is shared
(each fold reads it through a split view, `cache.write_split_view`), and the
frozen backbone's outputs of every video and view are cached per video in
`train_dir/features/` (`i3d.train.features`), so a video's features are
computed by whichever fold first needs them and read by the others.

A cross-validation run's `train_dir` holds:
  folds.json               the folds: subjects and videos on each side
  features/                frozen features per video and view, for all folds
  fold-<k>/                fold k's training run (config.json, ckpt/, the
                           split view cache/, eval_metrics.json) and
                           fold_result.json, written last: the fold is done
  learning_curve/<p>pct/fold-<k>/   the same on p% of its training subjects
  config.json              the settings, written once every fold's are checked
  cross_validation.json, cross_validation.txt, per_subject_accuracy.png,
  learning_curve.json, learning_curve.png   (`i3d.eval.cross_validation`)

Rerunning the same command resumes: finished folds are read back, an
unfinished one resumes from its latest checkpoint. A rerun with settings that
change a fold's result is refused, since its folds would mix two settings.
"""

import dataclasses
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
import numpy as np

from i3d import config as config_lib
from i3d import fileio
from i3d.data import cache
from i3d.data import sources
from i3d.data import splits
from i3d.eval import cross_validation as cv_reports
from i3d.eval import evaluate
from i3d.eval import metrics as metrics_lib
from i3d.train import features
from i3d.train import loop

FOLD_RESULT_FILE = "fold_result.json"
LEARNING_CURVE_SUBDIR = "learning_curve"
_VIEW_SUBDIR = "cache"
# Settings that do not change a fold's result: a rerun may change them.
_OPERATIONAL_SETTINGS = frozenset({
    "eval_every", "checkpoint_every", "keep_checkpoints", "log_every",
    "strategy", "export"})


def fold_dir(train_dir: str, index: int, percent: int = 100) -> str:
  """Where fold `index` trains, on `percent`% of its training subjects."""
  if percent == 100:
    return os.path.join(train_dir, f"fold-{index}")
  return os.path.join(train_dir, LEARNING_CURVE_SUBDIR, f"{percent}pct",
                      f"fold-{index}")


def _saved_folds(train_dir: str, folds: List[splits.Fold]) -> List[splits.Fold]:
  """Writes the folds, or checks them against the ones a run already wrote.

  Raises:
    DatasetError: if train_dir holds a run with other folds (other data, K,
      grouping or seed), whose fold results must not be mixed with these.
  """
  path = os.path.join(train_dir, splits.FOLDS_FILE)
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      saved = [splits.Fold.from_json(v) for v in json.load(f)]
    if saved != folds:
      raise sources.DatasetError(
          f"{path}: {train_dir} holds a cross-validation run with other folds "
          "(other videos, number of folds, grouping or seed); use a new "
          "--train_dir, or delete it to start again")
  else:
    fileio.write_json(path, [fold.to_json() for fold in folds])
  return folds


def _fold_config(config: config_lib.TrainConfig, info: cache.CacheInfo,
                 fold: splits.Fold, directory: str,
                 features_dir: str) -> config_lib.TrainConfig:
  """The settings of one fold's training: a plain run on the fold's split."""
  view = cache.write_split_view(info.cache_dir,
                                os.path.join(directory, _VIEW_SUBDIR),
                                fold.train_paths, fold.eval_paths)
  return dataclasses.replace(
      config, train_dir=directory, cache_dir=view, features_dir=features_dir,
      cross_validation_folds=0, learning_curve="", export=False)


def _check_settings(fold_config: config_lib.TrainConfig) -> None:
  """Refuses to resume a fold that was trained with other settings.

  Raises:
    DatasetError: if the fold's directory holds a config.json whose settings
      differ from these (other than `_OPERATIONAL_SETTINGS`), whose fold
      results must not be mixed with these.
  """
  if not os.path.exists(os.path.join(fold_config.train_dir,
                                     config_lib.CONFIG_FILE)):
    return
  saved = config_lib.load_config(fold_config.train_dir).to_json()
  changed = sorted(
      k for k, v in fold_config.to_json().items()
      if k not in _OPERATIONAL_SETTINGS and saved.get(k) != v)
  if changed:
    raise sources.DatasetError(
        f"{fold_config.train_dir}: trained with other settings "
        f"({', '.join(changed)}) than this run's; rerun with the same flags to "
        "resume, or use a new --train_dir")


def _predictions(trainer: loop.Trainer, split: str
                 ) -> Tuple[List[str], np.ndarray, Dict[str, np.ndarray]]:
  """The fold model's logits on a split of its view: paths, labels, logits.

  From the cached frozen features of the evaluation views when the run uses
  them (the backbone's frozen part then runs once per video for all folds),
  else with `evaluate.evaluate_model`.
  """
  config = trainer.config
  entries = cache.read_cache(config.cache_dir).split_entries(split)
  if config.uses_feature_cache:
    logits = features.logits_from_features(trainer.stages, config, split)
  else:
    logits = {s: v for s, v in evaluate.evaluate_model(
        trainer.model, config, split=split).logits.items()
              if s in config.streams}
  return ([e.path for e in entries], np.array([e.label_index for e in entries]),
          logits)


def _train_fold(config: config_lib.TrainConfig, info: cache.CacheInfo,
                fold: splits.Fold, directory: str, features_dir: str,
                checkpoints_dir: str) -> Optional[cv_reports.FoldResult]:
  """Trains and evaluates one fold, or reads its result if it is done.

  Returns:
    The fold's result, or None if training stopped early (SIGTERM).
  """
  fold_config = _fold_config(config, info, fold, directory, features_dir)
  _check_settings(fold_config)
  result_path = os.path.join(directory, FOLD_RESULT_FILE)
  if os.path.exists(result_path):
    with open(result_path, encoding="utf-8") as f:
      return _result_from_json(json.load(f))
  config_lib.save_config(fold_config)
  logging.info("Fold %d: training on subjects %s (%d videos), holding out %s "
               "(%d videos)", fold.index, ", ".join(fold.train_subjects),
               len(fold.train_paths), ", ".join(fold.eval_subjects),
               len(fold.eval_paths))
  trainer = loop.Trainer(fold_config, checkpoints_dir=checkpoints_dir)
  if trainer.train()["stopped_early"]:
    return None
  paths, labels, logits = _predictions(trainer, "eval")
  eval_metrics = metrics_lib.evaluate_streams(logits, labels, config.classes)
  trainer.log_eval(eval_metrics, int(trainer.step.numpy()))
  fileio.write_json(os.path.join(directory, evaluate.METRICS_FILE),
                    eval_metrics)
  _, train_labels, train_logits = _predictions(trainer, "train")
  result = cv_reports.FoldResult(
      fold=fold, paths=tuple(paths), labels=labels, logits=logits,
      train_metrics=metrics_lib.evaluate_streams(train_logits, train_labels,
                                                 config.classes))
  fileio.write_json(result_path, _result_to_json(result))
  return result


def _result_to_json(result: cv_reports.FoldResult) -> Dict[str, Any]:
  return {"fold": result.fold.to_json(), "paths": list(result.paths),
          "labels": result.labels.tolist(),
          "logits": {s: v.tolist() for s, v in result.logits.items()},
          "train_metrics": dict(result.train_metrics)}


def _result_from_json(value: Dict[str, Any]) -> cv_reports.FoldResult:
  return cv_reports.FoldResult(
      fold=splits.Fold.from_json(value["fold"]), paths=tuple(value["paths"]),
      labels=np.array(value["labels"], dtype=np.int64),
      logits={s: np.array(v) for s, v in value["logits"].items()},
      train_metrics=value["train_metrics"])


def run(config: config_lib.TrainConfig,
        checkpoints_dir: str = "checkpoints"
        ) -> Optional[Tuple[Dict[str, Any], Optional[Dict[str, Any]]]]:
  """Runs (or resumes) k-fold cross-validation and writes its report.

  Args:
    config: the settings of every fold's training, with
      `cross_validation_folds` K >= 2, `cross_validation_by_video` and
      `learning_curve` (percentages of each fold's training subjects).
    checkpoints_dir: where the Kinetics weights are looked for / fetched.

  Returns:
    (the `build_report` dict, the `learning_curve` dict or None), or None if
    a fold stopped early (SIGTERM; rerun to resume).

  Raises:
    DatasetError: without subjects (unless by video), for K out of range, or
      for a train_dir holding other folds.
    TrainingError: if a fold's training diverges.
  """
  info = cache.read_cache(config.cache_dir)
  grouping = "video" if config.cross_validation_by_video else "subject"
  folds = _saved_folds(config.train_dir, splits.assign_folds(
      info.entries, config.cross_validation_folds, grouping, config.seed))
  groups = splits.video_groups(info.entries, grouping)
  features_dir = os.path.join(config.train_dir, features.FEATURES_SUBDIR)

  def train_folds(percent: int) -> Optional[List[cv_reports.FoldResult]]:
    results = []
    for fold in folds:
      if percent != 100:
        fold = splits.subset_subjects(fold, percent / 100, groups, config.seed)
      result = _train_fold(config, info, fold,
                           fold_dir(config.train_dir, fold.index, percent),
                           features_dir, checkpoints_dir)
      if result is None:
        return None
      results.append(result)
    return results

  results = {100: train_folds(100)}
  if results[100] is None:
    return None
  subjects = {e.path: e.subject for e in info.entries}
  report = cv_reports.build_report(results[100], info.classes, groups,
                                   subjects, grouping, seed=config.seed)
  written = cv_reports.write_report(config.train_dir, report)
  logging.info("Wrote %s", ", ".join(written.values()))
  # The settings of every fold, once all of them have been checked.
  config_lib.save_config(config)
  if not config.learning_curve_percents:
    return report, None
  for percent in sorted(set(config.learning_curve_percents) - {100},
                        reverse=True):
    results[percent] = train_folds(percent)
    if results[percent] is None:
      return None
  curve = cv_reports.learning_curve(
      {p / 100: r for p, r in results.items()}, info.classes, groups,
      grouping, seed=config.seed)
  written = cv_reports.write_report(config.train_dir, report, curve)
  logging.info("Wrote %s", ", ".join(
      path for name, path in written.items() if "learning_curve" in name))
  return report, curve


def read_report(train_dir: str
                ) -> Tuple[Dict[str, Any], Optional[Dict[str, Any]]]:
  """Reads a finished cross-validation run's report and learning curve.

  Args:
    train_dir: the run's directory.

  Returns:
    (the `build_report` dict, the `learning_curve` dict or None).

  Raises:
    FileNotFoundError: if train_dir holds no finished cross-validation; the
      message says how many folds are done.
  """
  path = os.path.join(train_dir, cv_reports.REPORT_JSON)
  if not os.path.exists(path):
    folds_path = os.path.join(train_dir, splits.FOLDS_FILE)
    if not os.path.exists(folds_path):
      raise FileNotFoundError(f"{train_dir}: not a cross-validation run (no "
                              f"{splits.FOLDS_FILE})")
    with open(folds_path, encoding="utf-8") as f:
      num_folds = len(json.load(f))
    done = sum(os.path.exists(os.path.join(fold_dir(train_dir, k),
                                           FOLD_RESULT_FILE))
               for k in range(num_folds))
    raise FileNotFoundError(
        f"{train_dir}: cross-validation unfinished ({done} of {num_folds} "
        "folds done); rerun the same train.py command to finish it")
  with open(path, encoding="utf-8") as f:
    report = json.load(f)
  curve = None
  curve_path = os.path.join(train_dir, cv_reports.LEARNING_CURVE_JSON)
  if os.path.exists(curve_path):
    with open(curve_path, encoding="utf-8") as f:
      curve = json.load(f)
  return report, curve
