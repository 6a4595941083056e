"""Tests for i3d.eval.cross_validation: the report's numbers and pictures."""

import dataclasses
import json
import os

from absl.testing import absltest
import cv2
import numpy as np

from i3d.data import splits as folds
from i3d.eval import cross_validation

CLASSES = ["a", "b"]
SUBJECTS = {"s1/1": "s1", "s1/2": "s1", "s2/1": "s2", "s3/1": "s3",
            "s3/2": "s3"}
FOLD_0 = folds.Fold(0, ("s1", "s2"), ("s3",), ("s1/1", "s1/2", "s2/1"),
                    ("s3/1", "s3/2"))
FOLD_1 = folds.Fold(1, ("s3",), ("s1", "s2"), ("s3/1", "s3/2"),
                    ("s1/1", "s1/2", "s2/1"))


def _result(fold, labels, rgb, flow, train_top1):
  return cross_validation.FoldResult(
      fold=fold, paths=fold.eval_paths, labels=np.array(labels),
      logits={"rgb": np.array(rgb, float), "flow": np.array(flow, float)},
      train_metrics={"top1": train_top1})


# Joint = rgb + flow decides; where they disagree the sum is what counts.
# Fold 0: s1/1 a->a (right), s1/2 b->a (wrong), s2/1 a->a (right; RGB alone
# says b). Fold 1: s3/1 b->b (right; flow alone says a), s3/2 b->a (wrong).
RESULTS = [
    _result(FOLD_0, [0, 1, 0], [[2, 0], [1, 0], [0, 1]],
            [[1, 0], [1, 0], [3, 0]], 1.0),
    _result(FOLD_1, [1, 1], [[0, 3], [1, 0]], [[1, 0], [1, 0]], 0.9),
]


class BootstrapIntervalTest(absltest.TestCase):

  def test_all_right_is_certain(self):
    self.assertEqual(cross_validation.bootstrap_interval([3, 2], [3, 2]),
                     (1.0, 1.0))

  def test_one_right_one_wrong_subject(self):
    # Resampled pools are all-wrong, half or all-right with probabilities
    # 1/4, 1/2, 1/4: the 2.5% and 97.5% percentiles are 0 and 1.
    self.assertEqual(cross_validation.bootstrap_interval([1, 0], [1, 1]),
                     (0.0, 1.0))

  def test_narrower_with_more_subjects(self):
    few = cross_validation.bootstrap_interval([4, 2], [5, 5])
    many = cross_validation.bootstrap_interval([4, 2] * 20, [5, 5] * 20)
    self.assertLess(many[1] - many[0], few[1] - few[0])
    self.assertTrue(few[0] < 0.6 < few[1] and many[0] < 0.6 < many[1])

  def test_bad_counts(self):
    with self.assertRaisesRegex(ValueError, "correct <= videos"):
      cross_validation.bootstrap_interval([2], [1])


class BuildReportTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.report = cross_validation.build_report(RESULTS, CLASSES, SUBJECTS,
                                                SUBJECTS)

  def test_pooled_numbers_by_hand(self):
    pooled = self.report["pooled"]
    self.assertAlmostEqual(pooled["top1"], 3 / 5)
    # Rows true class: both a's right; one b of three right.
    self.assertEqual(pooled["confusion_matrix"], [[2, 0], [2, 1]])
    self.assertAlmostEqual(pooled["mean_class_accuracy"], (1 + 1 / 3) / 2)
    self.assertEqual(pooled["num_videos"], 5)
    self.assertEqual(list(pooled["streams"]), ["rgb", "flow", "joint"])
    low, high = pooled["top1_interval"]
    # Subjects score 1/2, 1/1 and 1/2: a pool of them lies in [1/2, 1].
    self.assertTrue(0.5 <= low <= 3 / 5 <= high <= 1.0, (low, high))
    self.assertIn("bootstrap over subjects", pooled["interval_method"])

  def test_per_subject_and_folds_by_hand(self):
    self.assertEqual(self.report["per_subject"], {
        "s1": {"videos": 2, "correct": 1, "top1": 0.5, "folds": [0]},
        "s2": {"videos": 1, "correct": 1, "top1": 1.0, "folds": [0]},
        "s3": {"videos": 2, "correct": 1, "top1": 0.5, "folds": [1]},
    })
    fold_0, fold_1 = self.report["folds"]
    self.assertEqual(fold_0["eval_subjects"], ["s1", "s2"])
    self.assertEqual(fold_0["train_subjects"], ["s3"])
    self.assertAlmostEqual(fold_0["metrics"]["top1"], 2 / 3)
    self.assertAlmostEqual(fold_1["metrics"]["top1"], 1 / 2)
    self.assertEqual(fold_1["metrics"]["confusion_matrix"], [[0, 0], [1, 1]])
    self.assertAlmostEqual(fold_1["gap"], 0.9 - 0.5)

  def test_overfitting_gap_by_hand(self):
    gap = self.report["overfitting_gap"]
    self.assertAlmostEqual(gap["train_top1"], 0.95)
    self.assertAlmostEqual(gap["held_out_top1"], (2 / 3 + 1 / 2) / 2)
    self.assertAlmostEqual(gap["gap"], 0.95 - 7 / 12)
    self.assertFalse(self.report["optimistic"])
    self.assertNotIn("warning", self.report)

  def test_video_folds_are_labelled_optimistic(self):
    groups = {p: "video:" + p for p in SUBJECTS}
    report = cross_validation.build_report(RESULTS, CLASSES, groups, SUBJECTS,
                                           grouping="video")
    self.assertTrue(report["optimistic"])
    self.assertIn("OPTIMISTIC", report["warning"])
    self.assertIn("over videos", report["pooled"]["interval_method"])
    self.assertTrue(cross_validation.format_report(report).startswith(
        "OPTIMISTIC"))

  def test_overlapping_folds_rejected(self):
    with self.assertRaisesRegex(ValueError, "held out by two folds"):
      cross_validation.build_report([RESULTS[0], RESULTS[0]], CLASSES,
                                    SUBJECTS, SUBJECTS)

  def test_text_report(self):
    text = cross_validation.format_report(self.report)
    self.assertIn("Pooled held-out top-1: 60.0% (95% interval", text)
    self.assertIn("gap 36.7 points", text)
    # Worst subjects first; s2 last.
    self.assertLess(text.index("s1    "), text.index("s2    "))
    self.assertLess(text.index("s3    "), text.index("s2    "))
    self.assertIn("Confusion matrix", text)


class LearningCurveAndFilesTest(absltest.TestCase):

  def test_learning_curve_points(self):
    # Fold 0 as trained on fewer subjects (its model now worse), fold 1
    # trained on s1 alone.
    half = [
        dataclasses.replace(
            RESULTS[0], logits={s: -x for s, x in RESULTS[0].logits.items()}),
        dataclasses.replace(
            RESULTS[1], fold=dataclasses.replace(
                FOLD_1, train_subjects=("s1",), train_paths=("s1/1", "s1/2")))]
    curve = cross_validation.learning_curve({1.0: RESULTS, 0.5: half},
                                            CLASSES, SUBJECTS)
    [small, full] = curve["points"]
    self.assertEqual((small["fraction"], full["fraction"]), (0.5, 1.0))
    self.assertEqual((small["train_subjects"], full["train_subjects"]),
                     (1.0, 1.5))
    # Negated logits flip fold 0's 2-of-3 right to 1 of 3.
    self.assertAlmostEqual(small["top1"], 2 / 5)
    self.assertAlmostEqual(full["top1"], 3 / 5)
    self.assertAlmostEqual(full["train_top1"], 0.95)

  def test_write_report(self):
    report = cross_validation.build_report(RESULTS, CLASSES, SUBJECTS,
                                           SUBJECTS)
    curve = cross_validation.learning_curve({1.0: RESULTS}, CLASSES,
                                            SUBJECTS)
    train_dir = self.create_tempdir().full_path
    written = cross_validation.write_report(train_dir, report, curve)
    self.assertCountEqual(os.listdir(train_dir), [
        "cross_validation.json", "cross_validation.txt",
        "per_subject_accuracy.png", "learning_curve.json",
        "learning_curve.png"])
    with open(written["json"], encoding="utf-8") as f:
      self.assertEqual(json.load(f)["pooled"]["top1"], 3 / 5)
    for key in ("per_subject_png", "learning_curve_png"):
      image = cv2.imread(written[key])
      self.assertEqual(image.ndim, 3)
      self.assertGreater(image.shape[0], 100)

  def test_failing_subject_is_red(self):
    report = cross_validation.build_report(RESULTS, CLASSES, SUBJECTS,
                                           SUBJECTS)
    # Make s1 fail outright, below the pooled interval.
    report["per_subject"]["s1"]["top1"] = 0.0
    report["pooled"]["top1_interval"] = [0.4, 0.9]
    image = cross_validation.render_per_subject(report)
    red = np.all(image == (40, 39, 214), axis=-1)
    # Worst first: the top bar (row 0) is red, and no other.
    rows = np.nonzero(red.any(axis=1))[0]
    self.assertNotEmpty(rows)
    self.assertLess(rows.max(), 60 + 22)


if __name__ == "__main__":
  absltest.main()
