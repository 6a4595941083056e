"""Tests for i3d.data.splits' k-fold cross-validation grouped by subject."""

import collections
import dataclasses
import itertools

from absl.testing import absltest
from absl.testing import parameterized

from i3d.data import sources
from i3d.data import splits as folds


@dataclasses.dataclass(frozen=True)
class _Video:
  path: str
  label: str
  subject: str | None


def _videos(subject_labels):
  """Videos of each subject: {subject: [labels]} -> list of _Video."""
  return [_Video(f"{subject}/{label}_{i}.mp4", label, subject)
          for subject, labels in subject_labels.items()
          for i, label in enumerate(labels)]


class AssignFoldsTest(parameterized.TestCase):

  @parameterized.parameters(
      itertools.product([2, 3, 5, 7], [0, 1, 2]))
  def test_folds_partition_subjects_and_videos(self, num_folds, seed):
    # Subjects with uneven numbers of videos and classes.
    videos = _videos({f"s{i}": ["a", "b", "c"][:1 + i % 3] * (1 + i % 2)
                      for i in range(7)})
    result = folds.assign_folds(videos, num_folds, seed=seed)
    self.assertLen(result, num_folds)
    subjects = {v.subject for v in videos}
    eval_subjects = [s for f in result for s in f.eval_subjects]
    # Every subject is held out by exactly one fold.
    self.assertCountEqual(eval_subjects, subjects)
    eval_paths = [p for f in result for p in f.eval_paths]
    self.assertCountEqual(eval_paths, [v.path for v in videos])
    subject_of = {v.path: v.subject for v in videos}
    for fold in result:
      self.assertNotEmpty(fold.eval_subjects)
      self.assertEqual(set(fold.train_subjects),
                       subjects - set(fold.eval_subjects))
      # No subject on both sides of a fold.
      self.assertEqual({subject_of[p] for p in fold.eval_paths},
                       set(fold.eval_subjects))
      self.assertEqual({subject_of[p] for p in fold.train_paths},
                       set(fold.train_subjects))
      self.assertEmpty(set(fold.eval_paths) & set(fold.train_paths))

  def test_leave_one_subject_out(self):
    # Four subjects, all of one class but one: the greedy criterion alone
    # would stack subjects; no fold may be empty.
    videos = _videos({"a": ["x"], "b": ["x"], "c": ["x"], "d": ["y", "y"]})
    result = folds.assign_folds(videos, 4)
    self.assertCountEqual([f.eval_subjects for f in result],
                          [("a",), ("b",), ("c",), ("d",)])

  def test_classes_balanced_as_far_as_subjects_allow(self):
    # Six one-class subjects, two per class: two folds can each hold one
    # subject of every class.
    videos = _videos({"a1": ["a"] * 3, "a2": ["a"] * 3, "b1": ["b"] * 2,
                      "b2": ["b"] * 2, "c1": ["c"], "c2": ["c"]})
    for seed in range(5):
      for fold in folds.assign_folds(videos, 2, seed=seed):
        labels = collections.Counter(p.split("/")[1][0]
                                     for p in fold.eval_paths)
        self.assertEqual(labels, {"a": 3, "b": 2, "c": 1}, (seed, fold))

  def test_deterministic_for_a_seed(self):
    videos = _videos({f"s{i}": ["a", "b"] for i in range(6)})
    self.assertEqual(folds.assign_folds(videos, 3, seed=4),
                     folds.assign_folds(videos, 3, seed=4))

  def test_refuses_without_subjects(self):
    videos = _videos({"alice": ["a", "b"]}) + [_Video("x.mp4", "a", None)]
    with self.assertRaisesRegex(sources.DatasetError,
                                r"1 of 3 videos have no subject \(e.g. "
                                r"x.mp4\).*overstate.*explicitly"):
      folds.assign_folds(videos, 2)

  def test_video_folds_when_asked(self):
    videos = [_Video(f"{label}{i}.mp4", label, None)
              for label in "ab" for i in range(4)]
    result = folds.assign_folds(videos, 4, grouping="video")
    for fold in result:
      # Stratified: one video of each class per fold.
      self.assertEqual(sorted(p[0] for p in fold.eval_paths), ["a", "b"])

  @parameterized.parameters(1, 4)
  def test_number_of_folds_out_of_range(self, num_folds):
    videos = _videos({"a": ["x"], "b": ["y"], "c": ["x"]})
    with self.assertRaisesRegex(sources.DatasetError,
                                "2 to 3 folds for 3 subjects"):
      folds.assign_folds(videos, num_folds)

  def test_json_round_trip(self):
    [fold, _] = folds.assign_folds(_videos({"a": ["x"], "b": ["y"]}), 2)
    self.assertEqual(folds.Fold.from_json(fold.to_json()), fold)


class SubsetSubjectsTest(absltest.TestCase):

  def test_nested_subsets_keep_eval(self):
    videos = _videos({f"s{i}": ["a", "b"] for i in range(9)})
    groups = folds.video_groups(videos)
    fold = folds.assign_folds(videos, 3)[0]
    previous = set()
    for fraction, expected in ((0.25, 2), (0.5, 3), (0.75, 4), (1.0, 6)):
      subset = folds.subset_subjects(fold, fraction, groups)
      self.assertLen(subset.train_subjects, expected)
      self.assertLessEqual(previous, set(subset.train_subjects))
      previous = set(subset.train_subjects)
      self.assertEqual({groups[p] for p in subset.train_paths}, previous)
      self.assertEqual(subset.eval_paths, fold.eval_paths)

  def test_bad_fraction(self):
    fold = folds.assign_folds(_videos({"a": ["x"], "b": ["y"]}), 2)[0]
    with self.assertRaisesRegex(ValueError, r"\(0, 1\]"):
      folds.subset_subjects(fold, 0.0, {})


if __name__ == "__main__":
  absltest.main()
