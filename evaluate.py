r"""Evaluates a model trained by train.py: metrics per stream and joint.

  python evaluate.py --checkpoint_dir=runs/demo
  python evaluate.py --checkpoint_dir=runs/demo --eval_num_frames=64 \
      --eval_num_clips=5 --eval_num_crops=3
  python evaluate.py --checkpoint_dir=runs/demo --data_dir=new_videos/

--checkpoint_dir takes a train.py train_dir. The classes, streams, crop,
evaluation views and preprocessing come from the run (its config.json), so
few flags are needed; the --eval_num_* flags override the run's settings of
the same name. By default the run's latest checkpoint is evaluated on the
eval split of its training cache (the held-out videos or
subjects); --data_dir or --manifest evaluates new labelled videos instead,
prepared with the run's preprocessing into --cache_dir (default
DIR/eval_cache); --cache_dir alone evaluates a cache prepare_data.py made
(every video, or --split).

A cross-validation directory (train.py --cross_validation_folds) is not
evaluated again: its report (pooled, per fold, per subject, learning curve)
is printed; evaluate one fold with --checkpoint_dir=DIR/fold-<k>.

Prints the report of each stream and of joint (top-1, top-k, mean class
accuracy, per-class precision/recall/F1, confusion matrix) and writes to
--output_dir (default DIR/eval): metrics.json, predictions.csv (one row per
video) and confusion_matrix*.png.

Exit status: 0 when every video was evaluated; 1 when some new videos could
not be decoded (listed; the others are evaluated and reported); 2 when
nothing could be evaluated (no checkpoint, classes differing from the
checkpoint's, a checkpoint that does not fit, no data).
"""

import os
import sys
from typing import Sequence

from absl import app
from absl import flags

# Only TensorFlow-free modules here: the processes that prepare new videos
# are spawned and re-import this script; main() imports the rest.
from i3d import config as config_lib
from i3d.data import sources as data_sources
from i3d.data import splits as data_splits
from i3d.eval import cross_validation as cv_reports
from i3d.eval import reports as eval_reports
from i3d import labels

_CHECKPOINT_DIR = flags.DEFINE_string(
    "checkpoint_dir", None, "The train.py train_dir to evaluate.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "A checkpoint of the run: its prefix (DIR/ckpt/"
    "ckpt-N), one of its files (.index, .data-*) or its directory; default "
    "the latest.")
_SPLIT = flags.DEFINE_enum(
    "split", None, list(data_sources.SPLITS), "Split of the cache to evaluate. "
    "Default: eval for the training cache; every video of new data "
    "(--data_dir, --manifest, or another --cache_dir).")
_PREPARE_FLAGS = config_lib.define_flags(
    config_lib.PrepareConfig, ["data_dir", "manifest", "prepare_workers"],
    note="For new labelled videos to evaluate.")
_CLASSES = config_lib.define_flags(
    config_lib.PrepareConfig, ["classes"],
    docs={"classes": "Optional check: the class list you expect (a class "
                     "file or comma-separated names); an error if the "
                     "checkpoint's differs."})["classes"]
_CACHE_DIR = flags.DEFINE_string(
    "cache_dir", None, "Where --data_dir/--manifest are prepared (default "
    "DIR/eval_cache); alone, an already prepared cache to evaluate.")
_VIEW_FLAGS = config_lib.define_flags(
    config_lib.TrainConfig,
    ["eval_num_frames", "eval_num_clips", "eval_num_crops"],
    defaults={"eval_num_frames": None, "eval_num_clips": None,
              "eval_num_crops": None},
    note="Default: the run's setting.")
_INFERENCE_BFLOAT16 = config_lib.define_flags(
    config_lib.TrainConfig, ["inference_bfloat16"],
    defaults={"inference_bfloat16": None},
    note="Default: the run's setting.")["inference_bfloat16"]
_TOP_K = flags.DEFINE_integer("top_k", 5, "k of the top-k accuracy.")
_OUTPUT_JSON = flags.DEFINE_string(
    "output_json", None, "Also write the metrics JSON to this file.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None, "Where the reports go; default DIR/eval.")

flags.mark_flag_as_required("checkpoint_dir")
flags.mark_flags_as_mutual_exclusive(["data_dir", "manifest"])


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  # pylint: disable=g-import-not-at-top
  from i3d.eval import evaluate as evaluation
  from i3d.eval import runs as eval_runs
  # pylint: enable=g-import-not-at-top
  data_dir = _PREPARE_FLAGS["data_dir"].value
  manifest = _PREPARE_FLAGS["manifest"].value
  num_frames = _VIEW_FLAGS["eval_num_frames"].value
  train_dir = _CHECKPOINT_DIR.value
  if os.path.exists(os.path.join(train_dir, data_splits.FOLDS_FILE)):
    return _print_cross_validation(train_dir)
  new_data = bool(data_dir or manifest)
  failures = ()
  try:
    classes = (labels.resolve_classes(_CLASSES.value)
               if _CLASSES.value else None)
    run = eval_runs.load_run(train_dir, _CHECKPOINT.value, classes,
                             _INFERENCE_BFLOAT16.value)
    config = eval_runs.with_views(
        run.config, num_frames=num_frames or None,
        num_clips=_VIEW_FLAGS["eval_num_clips"].value,
        num_crops=_VIEW_FLAGS["eval_num_crops"].value,
        whole_video=num_frames == 0)
    cache_dir = _CACHE_DIR.value
    if new_data:
      cache_dir = cache_dir or os.path.join(train_dir,
                                            evaluation.EVAL_CACHE_SUBDIR)
      report = evaluation.prepare_eval_data(
          run, cache_dir, data_dir, manifest,
          _PREPARE_FLAGS["prepare_workers"].value)
      failures = report.failures
    # The training cache's train split is never evaluated unless asked for.
    training_cache = not cache_dir or (os.path.realpath(cache_dir) ==
                                       os.path.realpath(run.config.cache_dir))
    split = _SPLIT.value or ("eval" if training_cache else None)
    result = evaluation.evaluate_model(run.classifier, config, cache_dir, split,
                                    _TOP_K.value)
    print(f"Checkpoint: {run.checkpoint}\n"
          f"Videos: {len(result.paths)} of "
          f"{cache_dir or config.cache_dir} "
          f"({'split ' + split if split else 'all splits'}), "
          f"{eval_runs.describe_views(config)}\n")
    print(eval_reports.format_report(result.metrics))
    written = evaluation.write_eval_outputs(
        result, _OUTPUT_DIR.value or os.path.join(train_dir,
                                                  evaluation.EVAL_OUTPUT_SUBDIR))
    if _OUTPUT_JSON.value:
      eval_reports.write_metrics_json(_OUTPUT_JSON.value, result.metrics)
      written["output_json"] = _OUTPUT_JSON.value
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    if failures:
      print(_failure_lines(failures), file=sys.stderr)
    return 2
  print("Wrote " + ", ".join(written.values()))
  if failures:
    print(_failure_lines(failures), file=sys.stderr)
    return 1
  return 0


def _print_cross_validation(train_dir: str) -> int:
  """Prints a cross-validation run's report; 2 if it is not finished."""
  # pylint: disable=g-import-not-at-top
  from i3d.train import cross_validation
  # pylint: enable=g-import-not-at-top
  try:
    report, curve = cross_validation.read_report(train_dir)
  except (FileNotFoundError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(cv_reports.format_report(report))
  if curve:
    print("\n" + cv_reports.format_learning_curve(curve))
  return 0


def _failure_lines(failures: Sequence[data_sources.Failure]) -> str:
  return "\n".join([f"{len(failures)} video(s) could not be evaluated:"] +
                   [f"  {failure}" for failure in failures])


if __name__ == "__main__":
  app.run(main)
