"""Tests for i3d.synthetic: class rules, determinism, files, manifest, CLI."""

import csv
import os
import subprocess
import sys
import tempfile
from typing import Callable

from absl.testing import absltest
from absl.testing import parameterized
import cv2
import numpy as np

from i3d import labels
from i3d import synthetic
from i3d import video

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small frames keep the file tests fast; the rules do not depend on size.
_SMALL = {"width": 64, "height": 48}


def _rule_clips(label: str) -> list[synthetic.Clip]:
  """Twelve clips of a class: six subjects under each of two seeds."""
  return [synthetic.sample_clip(label, index, seed)
          for seed in (0, 1) for index in range(6)]


def _mean_side(skeleton: synthetic.Skeleton, joint: str) -> np.ndarray:
  return 0.5 * (skeleton[f"{joint}_l"] + skeleton[f"{joint}_r"])


def _hip_above_body_line(skeleton: synthetic.Skeleton) -> np.ndarray:
  """Signed height of the pelvis over the ankle-to-shoulder line, (T,)."""
  line = (_mean_side(skeleton, "shoulder") - _mean_side(skeleton, "ankle"))[:, :2]
  hip = (skeleton["pelvis"] - _mean_side(skeleton, "ankle"))[:, :2]
  # The head is towards +x, so a positive cross product is above the line.
  return (line[:, 0] * hip[:, 1] - line[:, 1] * hip[:, 0]) / np.linalg.norm(
      line, axis=-1)


def _lowest_foot(skeleton: synthetic.Skeleton) -> np.ndarray:
  return np.min([skeleton[f"{joint}_{side}"][:, 1]
                 for joint in ("ankle", "toe") for side in "lr"], axis=0)


def _elbow_angle(skeleton: synthetic.Skeleton, side: str) -> np.ndarray:
  upper = skeleton[f"shoulder_{side}"] - skeleton[f"elbow_{side}"]
  lower = skeleton[f"wrist_{side}"] - skeleton[f"elbow_{side}"]
  cosine = np.sum(upper * lower, axis=-1) / (
      np.linalg.norm(upper, axis=-1) * np.linalg.norm(lower, axis=-1))
  return np.degrees(np.arccos(np.clip(cosine, -1, 1)))


def _hands_to_head(clip: synthetic.Clip,
                   skeleton: synthetic.Skeleton) -> np.ndarray:
  """The farther hand's distance from the head centre, in head radii, (T,)."""
  return np.max([np.linalg.norm(skeleton[f"wrist_{side}"] - skeleton["head"],
                                axis=-1) for side in "lr"], axis=0) / (
                                    clip.body.radii["head"])


def _push_up_depth(clip: synthetic.Clip, skeleton: synthetic.Skeleton,
                   frame: int) -> float:
  """Shoulder height over the wrists in arm lengths: 1 is straight arms."""
  return (_mean_side(skeleton, "shoulder")[frame, 1] -
          _mean_side(skeleton, "wrist")[frame, 1]) / clip.body.arm_reach


def _shoulder_rise(skeleton: synthetic.Skeleton) -> np.ndarray:
  height = _mean_side(skeleton, "shoulder")[:, 1]
  return height - height.min()


# Each rule: (what it says, predicate on clip, skeleton, rest and peak frame
# indices and body height). Margins are in body heights unless said otherwise.
Rule = tuple[str, Callable[..., bool]]


def _floor_contact_rules(joints: tuple[str, ...]) -> list[Rule]:
  return [(f"{joint} on the floor", lambda c, s, rest, peak, h, joint=joint:
           np.allclose(s[f"{joint}_l"][:, 1], c.body.radii[
               "hand" if joint == "wrist" else "foot"])) for joint in joints]


_PUSH_UP_CONTACTS = _floor_contact_rules(("wrist", "toe"))
_CRUNCH_BASE = [
    ("pelvis on the floor", lambda c, s, rest, peak, h: np.allclose(
        s["pelvis"][:, 1], c.body.radii["torso_depth"])),
    ("hands away from the head",
     lambda c, s, rest, peak, h: _hands_to_head(c, s).min() > 3.0),
]
_SHOULDERS_RISE = ("shoulders rise well",
                   lambda c, s, rest, peak, h: _shoulder_rise(s)[peak] > 0.12 * h)
_FEET_DOWN = ("feet stay on the floor", lambda c, s, rest, peak, h: np.allclose(
    _lowest_foot(s), c.body.radii["foot"]))

RULES: dict[str, list[Rule]] = {
    "squat_correct": [
        ("hip below knee at the bottom", lambda c, s, rest, peak, h:
         s["pelvis"][peak, 1] < _mean_side(s, "knee")[peak, 1] - 0.02 * h),
        ("standing at rest", lambda c, s, rest, peak, h:
         s["pelvis"][rest, 1] > _mean_side(s, "knee")[rest, 1] + 0.2 * h),
        _FEET_DOWN,
    ],
    "squat_not-low": [
        ("hip always above knee", lambda c, s, rest, peak, h: np.all(
            s["pelvis"][:, 1] > _mean_side(s, "knee")[:, 1] + 0.1 * h)),
        ("yet it squats", lambda c, s, rest, peak, h:
         s["pelvis"][rest, 1] - s["pelvis"][peak, 1] > 0.08 * h),
        _FEET_DOWN,
    ],
    "pull-up_correct": [
        ("chin over the bar at the top", lambda c, s, rest, peak, h:
         s["chin"][peak, 1] > s["bar"][peak, 1] + 0.05 * h),
        ("chin under the bar when hanging", lambda c, s, rest, peak, h:
         s["chin"][rest, 1] < s["bar"][rest, 1] - 0.1 * h),
        ("straight arms when hanging", lambda c, s, rest, peak, h:
         min(_elbow_angle(s, "l")[rest], _elbow_angle(s, "r")[rest]) > 170),
        ("hands on the bar", lambda c, s, rest, peak, h: np.allclose(
            _mean_side(s, "wrist"), s["bar"])),
        ("feet off the floor", lambda c, s, rest, peak, h:
         _lowest_foot(s).min() > 0.05 * h),
    ],
    "push-up_not-low": _PUSH_UP_CONTACTS + [
        ("body straight", lambda c, s, rest, peak, h:
         np.abs(_hip_above_body_line(s)).max() < 0.02 * h),
        ("chest stops well above the floor", lambda c, s, rest, peak, h:
         _push_up_depth(c, s, peak) > 0.7),
    ],
    "push-up_butt-up": _PUSH_UP_CONTACTS + [
        ("hips piked up", lambda c, s, rest, peak, h:
         _hip_above_body_line(s).min() > 0.1 * h),
        ("goes low", lambda c, s, rest, peak, h:
         _push_up_depth(c, s, peak) < 0.62),
    ],
    "push-up_not-straight": _PUSH_UP_CONTACTS + [
        ("hips sag", lambda c, s, rest, peak, h:
         _hip_above_body_line(s).max() < -0.06 * h),
        ("goes low", lambda c, s, rest, peak, h:
         _push_up_depth(c, s, peak) < 0.62),
    ],
    "crunch_correct": _CRUNCH_BASE + [_SHOULDERS_RISE, _FEET_DOWN],
    "crunch_heels-up": _CRUNCH_BASE + [
        _SHOULDERS_RISE,
        ("feet off the floor", lambda c, s, rest, peak, h:
         _lowest_foot(s).min() > 0.1 * h),
        ("feet high at the top", lambda c, s, rest, peak, h:
         _lowest_foot(s)[peak] > 0.2 * h),
    ],
    "crunch_not-enough": _CRUNCH_BASE + [
        ("shoulders barely rise", lambda c, s, rest, peak, h:
         _shoulder_rise(s).max() < 0.06 * h),
        ("but they do rise", lambda c, s, rest, peak, h:
         _shoulder_rise(s)[peak] > 0.015 * h),
        _FEET_DOWN,
    ],
    "crunch_bad-hands": [
        ("hands on the head", lambda c, s, rest, peak, h:
         _hands_to_head(c, s).max() < 1.5),
        _SHOULDERS_RISE, _FEET_DOWN,
    ],
}


class ClassRulesTest(parameterized.TestCase):

  def test_every_class_has_rules(self):
    self.assertEqual(tuple(RULES), labels.EXERCISE_CLASSES)
    self.assertEqual(tuple(synthetic.CLASSES), labels.EXERCISE_CLASSES)

  @parameterized.named_parameters((label, label) for label in RULES)
  def test_rules_hold_on_the_skeleton(self, label):
    for clip in _rule_clips(label):
      skeleton = synthetic.clip_skeleton(clip)
      phase = synthetic.rep_phase(clip)
      # Every clip shows a whole peak and a rest.
      self.assertGreater(phase.max(), 0.99)
      self.assertLess(phase.min(), 0.01)
      rest, peak = int(np.argmin(phase)), int(np.argmax(phase))
      for description, holds in RULES[label]:
        with self.subTest(clip=(clip.clip_index, clip.subject),
                          rule=description):
          self.assertTrue(holds(clip, skeleton, rest, peak, clip.body.height))

  @parameterized.named_parameters((label, label) for label in RULES)
  def test_skeleton_is_whole_and_above_the_floor(self, label):
    clip = synthetic.sample_clip(label, 0, 0)
    skeleton = synthetic.clip_skeleton(clip)
    for name, points in skeleton.items():
      self.assertEqual(points.shape, (clip.num_frames, 3), name)
      self.assertTrue(np.all(np.isfinite(points)), name)
      self.assertGreater(points[:, 1].min(), 0.0, name)
    for upper, lower, length in (("shoulder", "elbow", "upper_arm"),
                                 ("elbow", "wrist", "forearm"),
                                 ("hip", "knee", "thigh"),
                                 ("knee", "ankle", "shank")):
      bone = np.linalg.norm(skeleton[f"{upper}_l"] - skeleton[f"{lower}_l"],
                            axis=-1)
      np.testing.assert_allclose(bone, clip.body.lengths[length], rtol=1e-6)


class SamplingTest(absltest.TestCase):

  def test_subjects_fix_bodies_and_split_cleanly(self):
    clips = [synthetic.sample_clip(label, index, seed=3)
             for label in synthetic.CLASSES for index in range(20)]
    bodies = {}
    for clip in clips:
      self.assertEqual(clip.subject, clip.clip_index % 10)
      self.assertEqual(bodies.setdefault(clip.subject, clip.body), clip.body)
    self.assertLen({body.height for body in bodies.values()}, 10)
    eval_subjects = {7, 8}
    for label in synthetic.CLASSES:
      subjects = {c.subject for c in clips if c.label == label}
      self.assertTrue(subjects & eval_subjects, label)
      self.assertTrue(subjects - eval_subjects, label)

  def test_clip_lengths_and_rates(self):
    for index in range(20):
      clip = synthetic.sample_clip("squat_correct", index, 0)
      self.assertBetween(clip.num_frames / clip.fps, 2.0, 4.0)
      self.assertLess(clip.rep_seconds, clip.num_frames / clip.fps)

  def test_rejects_unknown_class(self):
    with self.assertRaisesRegex(ValueError, "unknown class"):
      synthetic.sample_clip("burpee", 0, 0)


class RenderTest(absltest.TestCase):

  def test_frames_are_deterministic_per_seed(self):
    clip = synthetic.sample_clip("push-up_butt-up", 2, 5)
    frames = synthetic.render_clip(clip)
    self.assertEqual(frames.shape,
                     (clip.num_frames, clip.height, clip.width, 3))
    self.assertEqual(frames.dtype, np.uint8)
    np.testing.assert_array_equal(
        frames, synthetic.render_clip(synthetic.sample_clip("push-up_butt-up", 2, 5)))
    other = synthetic.render_clip(synthetic.sample_clip("push-up_butt-up", 2, 6))
    self.assertFalse(np.array_equal(frames[:10], other[:10]))

  def test_person_moves_and_fills_the_frame(self):
    clip = synthetic.sample_clip("squat_correct", 0, 0)
    frames = synthetic.render_clip(clip).astype(np.int16)
    moving = np.abs(frames - frames[int(np.argmin(synthetic.rep_phase(clip)))])
    rows = np.flatnonzero((moving.max(axis=(0, 3)) > 60).any(axis=1))
    # The squatting body spans a good part of the frame's height.
    self.assertGreater((rows.max() - rows.min()) / clip.height, 0.3)


class _TempDirTestCase(absltest.TestCase):

  def _tempdir(self) -> str:
    return self.enterContext(tempfile.TemporaryDirectory())


def _read_manifest(path: str) -> list[dict[str, str]]:
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def _stat_all(directory: str) -> dict[str, tuple[int, int]]:
  stats = {}
  for root, _, names in os.walk(directory):
    for name in names:
      status = os.stat(os.path.join(root, name))
      stats[os.path.join(root, name)] = (status.st_ino, status.st_mtime_ns)
  return stats


class DatasetTest(_TempDirTestCase):

  def test_manifest_videos_and_idempotence(self):
    directory = self._tempdir()
    manifest = synthetic.generate_dataset(directory, clips_per_class=2, seed=0,
                                          num_subjects=2, **_SMALL)
    self.assertEqual(manifest, os.path.join(directory, "manifest.csv"))
    with open(manifest, encoding="utf-8") as f:
      self.assertEqual(f.readline(), "path,label,subject\n")
    rows = _read_manifest(manifest)
    self.assertLen(rows, 20)
    self.assertEqual([r["label"] for r in rows],
                     [label for label in labels.EXERCISE_CLASSES for _ in range(2)])
    for row in rows:
      self.assertEqual(row["path"].split("/")[0], row["label"])
      self.assertTrue(os.path.isfile(os.path.join(directory, row["path"])))
    self.assertEqual({r["subject"] for r in rows}, {"0", "1"})
    self.assertEqual([f for f in os.listdir(os.path.join(directory, "squat_correct"))
                      if f.startswith(".")], [])

    # The files decode with the project's reader, as rendered.
    clip = synthetic.sample_clip("crunch_bad-hands", 1, 0, num_subjects=2,
                                 **_SMALL)
    path = os.path.join(directory, synthetic.clip_path(clip.label, 1))
    decoded = video.read_video(path, fps=clip.fps, short_side=clip.height)
    rendered = synthetic.render_clip(clip)
    self.assertEqual(decoded.shape, rendered.shape)
    # Lossy, but close; swapped colour channels would be far off.
    self.assertLess(np.abs(decoded.astype(float) - rendered).mean(), 8.0)
    with open(path, "rb") as f:
      self.assertEqual(f.read(), synthetic.encode_mp4(rendered, clip.fps))

    before = _stat_all(directory)
    synthetic.generate_dataset(directory, clips_per_class=2, seed=0,
                               num_subjects=2, **_SMALL)
    self.assertEqual(_stat_all(directory), before)

    # A partial output (no manifest, a video lost) is completed.
    with open(path, "rb") as f:
      original = f.read()
    os.remove(path)
    os.remove(manifest)
    synthetic.generate_dataset(directory, clips_per_class=2, seed=0,
                               num_subjects=2, **_SMALL)
    with open(path, "rb") as f:
      self.assertEqual(f.read(), original)
    self.assertEqual(_read_manifest(manifest), rows)
    after = _stat_all(directory)
    for name, stat in before.items():
      if name not in (path, manifest):
        self.assertEqual(after[name], stat, name)

  def test_refuses_other_settings(self):
    directory = self._tempdir()
    synthetic.generate_dataset(directory, clips_per_class=1, seed=0, **_SMALL)
    with self.assertRaisesRegex(ValueError, "other output directory"):
      synthetic.generate_dataset(directory, clips_per_class=1, seed=1, **_SMALL)

  def test_workers_write_the_same_bytes(self):
    serial, parallel = self._tempdir(), self._tempdir()
    for directory, workers in ((serial, 1), (parallel, 2)):
      synthetic.generate_dataset(directory, clips_per_class=1, seed=4,
                                 num_workers=workers, **_SMALL)
    for row in _read_manifest(os.path.join(serial, "manifest.csv")):
      with open(os.path.join(serial, row["path"]), "rb") as a, open(
          os.path.join(parallel, row["path"]), "rb") as b:
        self.assertEqual(a.read(), b.read(), row["path"])


class CommandLineTest(_TempDirTestCase):

  def test_writes_dataset_and_contact_sheet(self):
    directory = self._tempdir()
    sheet = os.path.join(directory, "sheet.png")
    subprocess.run(
        [sys.executable, "-m", "i3d.synthetic", f"--output_dir={directory}/data",
         "--clips_per_class=1", "--seed=2", f"--contact_sheet={sheet}",
         "--width=64", "--height=48", "--num_workers=1"],
        cwd=_REPO, check=True, capture_output=True)
    self.assertLen(_read_manifest(os.path.join(directory, "data", "manifest.csv")),
                   10)
    with open(sheet, "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
    image = cv2.imread(sheet)
    self.assertEqual(image.shape[0], 10 * 48)  # One row per class.
    self.assertEqual((image.shape[1] - 170) % 64, 0)
    for row in np.split(image[:, 170:], 10):
      self.assertGreater(row.std(), 5.0)  # Not blank.


if __name__ == "__main__":
  absltest.main()
