"""Tests for i3d.train.cross_validation: k-fold by subject, end to end."""

import dataclasses
import json
import os
import subprocess
import sys
from unittest import mock

from absl.testing import absltest
import pytest

from i3d import config as config_lib
from i3d.data import cache
from i3d.data import pipeline
from i3d.data import splits
from i3d.train import cross_validation
from i3d.train import loop
from tests import testdata

ROOT = testdata.ROOT
CLASSES = testdata.DIRECTION_CLASSES


@pytest.mark.slow
class CrossValidationTest(testdata.DirectionCacheTest):
  """One tiny 2-fold run over 4 subjects (8 videos), with a learning curve."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.train_dir = os.path.join(cls.root, "cv")
    cls.counts = cls.run_cross_validation()
    cls.outcome = cls.counts.pop("outcome")

  @classmethod
  def config(cls) -> config_lib.TrainConfig:
    return config_lib.TrainConfig(
        cache_dir=cls.cache_dir, train_dir=cls.train_dir, classes=CLASSES,
        stream="joint", num_frames=4, crop_size=32, batch_size=2,
        trainable="logits", learning_rate=0.005, lr_schedule="constant",
        num_steps=3, checkpoint_every=100, log_every=1, feature_views=2,
        rgb_checkpoint=cls.rgb_checkpoint, export=False,
        # The flow stream keeps the checkpoint's batch-norm statistics, so a
        # video's frozen features are the same in every fold; re-estimated
        # ones come from each fold's training subjects and give each fold its
        # own features (see features._store).
        flow_batch_norm_batches=0,
        cross_validation_folds=2, learning_curve="50")

  @classmethod
  def run_cross_validation(cls):
    """Runs cross_validation.run, counting trainings and frozen features."""
    train = testdata.CallCounter(loop.Trainer.train)
    training_views = testdata.CallCounter(
        pipeline.make_feature_views_dataset, 1)
    eval_views = testdata.CallCounter(pipeline.make_eval_views, 1)
    with mock.patch.object(loop.Trainer, "train",
                           lambda self, *a: train(self, *a)), \
        mock.patch.object(pipeline, "make_feature_views_dataset",
                          training_views), \
        mock.patch.object(pipeline, "make_eval_views", eval_views):
      outcome = cross_validation.run(cls.config())
    return {"outcome": outcome, "trainings": train.calls,
            "training_views": training_views.videos,
            "eval_views": eval_views.videos}

  def test_one_training_per_fold_and_fraction(self):
    # 2 folds on all their training subjects, 2 on half of them.
    self.assertEqual(self.counts["trainings"], 4)
    for path in ("fold-0", "fold-1", "learning_curve/50pct/fold-0",
                 "learning_curve/50pct/fold-1"):
      self.assertTrue(os.path.exists(os.path.join(
          self.train_dir, path, cross_validation.FOLD_RESULT_FILE)), path)

  def test_frozen_features_once_per_video_and_view(self):
    videos = [e.path for e in cache.read_cache(self.cache_dir).entries]
    # Every video is a training video in one fold and held out in the other,
    # and trains again in the learning curve; its frozen features are still
    # computed once for the training views and once for the eval views.
    self.assertCountEqual(self.counts["training_views"], videos)
    self.assertCountEqual(self.counts["eval_views"], videos)

  def test_report(self):
    report, curve = self.outcome
    self.assertEqual(report["num_folds"], 2)
    self.assertEqual(report["num_videos"], 8)
    self.assertCountEqual(report["per_subject"], ["s0", "s1", "s2", "s3"])
    held_out = [s for fold in report["folds"] for s in fold["eval_subjects"]]
    self.assertCountEqual(held_out, ["s0", "s1", "s2", "s3"])
    for fold in report["folds"]:
      self.assertEmpty(set(fold["eval_subjects"]) &
                       set(fold["train_subjects"]))
      self.assertEqual(fold["metrics"]["num_videos"], 4)
      self.assertIn("joint", fold["metrics"]["streams"])
    low, high = report["pooled"]["top1_interval"]
    self.assertTrue(low <= report["pooled"]["top1"] <= high)
    self.assertEqual([p["train_subjects"] for p in curve["points"]], [1, 2])
    with open(os.path.join(self.train_dir, "cross_validation.json"),
              encoding="utf-8") as f:
      self.assertEqual(json.load(f)["pooled"]["top1"],
                       report["pooled"]["top1"])
    for name in ("cross_validation.txt", "per_subject_accuracy.png",
                 "learning_curve.json", "learning_curve.png"):
      self.assertTrue(os.path.exists(os.path.join(self.train_dir, name)))

  def test_resume_trains_only_the_unfinished_fold(self):
    os.remove(os.path.join(self.train_dir, "fold-1",
                           cross_validation.FOLD_RESULT_FILE))
    counts = self.run_cross_validation()
    self.assertEqual(counts["trainings"], 1)
    # Nothing recomputed: every video's features are cached.
    self.assertEmpty(counts["training_views"])
    self.assertEmpty(counts["eval_views"])
    self.assertEqual(counts["outcome"][0]["pooled"]["top1"],
                     self.outcome[0]["pooled"]["top1"])

  def test_other_folds_in_the_same_train_dir_refused(self):
    config = self.config()
    with self.assertRaisesRegex(ValueError, "holds a cross-validation run "
                                "with other folds"):
      cross_validation.run(config_lib.TrainConfig(**{
          **config.to_json(), "cross_validation_folds": 3,
          "learning_curve": ""}))

  def test_other_settings_in_the_same_train_dir_refused(self):
    config = self.config()
    with open(os.path.join(self.train_dir, "config.json"),
              encoding="utf-8") as f:
      saved = f.read()
    with self.assertRaisesRegex(ValueError, "fold-0: trained with other "
                                "settings \\(learning_rate, num_steps\\)"):
      cross_validation.run(dataclasses.replace(config, num_steps=4,
                                               learning_rate=0.01))
    # The run's config.json still describes its folds.
    with open(os.path.join(self.train_dir, "config.json"),
              encoding="utf-8") as f:
      self.assertEqual(f.read(), saved)

  def test_evaluate_prints_the_report(self):
    output = subprocess.run(
        [sys.executable, os.path.join(ROOT, "evaluate.py"),
         f"--checkpoint_dir={self.train_dir}"],
        capture_output=True, text=True, cwd=ROOT, check=True).stdout
    self.assertIn("Cross-validation: 2 folds by subject", output)
    self.assertIn("Learning curve", output)


class ReadReportTest(absltest.TestCase):

  def test_unfinished_run_says_how_many_folds_are_done(self):
    train_dir = self.create_tempdir().full_path
    folds = [splits.Fold(k, (f"s{k}",), (), (f"v{k}",), ()) for k in range(3)]
    with open(os.path.join(train_dir, splits.FOLDS_FILE), "w",
              encoding="utf-8") as f:
      json.dump([fold.to_json() for fold in folds], f)
    os.makedirs(cross_validation.fold_dir(train_dir, 0))
    open(os.path.join(cross_validation.fold_dir(train_dir, 0),
                      cross_validation.FOLD_RESULT_FILE), "w").close()
    with self.assertRaisesRegex(FileNotFoundError, "1 of 3 folds done"):
      cross_validation.read_report(train_dir)


if __name__ == "__main__":
  absltest.main()
