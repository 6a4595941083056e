"""Tests for i3d_demo.synthetic: class rules, determinism, files, manifest, CLI."""

import csv
import dataclasses
import json
import os
import subprocess
import sys
from typing import Callable

from absl.testing import absltest
from absl.testing import parameterized
import cv2
import numpy as np

from i3d import labels
from i3d.video import io as video_io
from i3d_demo import synthetic
from tests import testdata

_REPO = testdata.ROOT
# Small frames keep the file tests fast; nothing they check depends on size.
_SMALL = {"short_side": 48}


@dataclasses.dataclass
class Motion:
  """A clip's skeleton and the measurements the class rules use.

  Heights are metres above the floor; `h` is the subject's standing height,
  the unit of the rules' margins.
  """
  clip: synthetic.Clip
  joints: synthetic.Skeleton

  def __post_init__(self):
    phase = synthetic.rep_phase(self.clip)
    self.rest, self.peak = int(np.argmin(phase)), int(np.argmax(phase))
    self.h = self.clip.body.height

  def mean(self, joint: str) -> np.ndarray:
    """The midpoint of a left/right joint pair, (T, 3)."""
    return 0.5 * (self.joints[f"{joint}_l"] + self.joints[f"{joint}_r"])

  def height(self, joint: str) -> np.ndarray:
    return (self.joints[joint] if joint in self.joints else
            self.mean(joint))[:, 1]

  def lowest_foot(self) -> np.ndarray:
    return np.min([self.joints[f"{joint}_{side}"][:, 1]
                   for joint in ("ankle", "toe") for side in "lr"], axis=0)

  def hip_above_body_line(self) -> np.ndarray:
    """Signed height of the pelvis over the ankle-to-shoulder line, (T,)."""
    ankle = self.mean("ankle")
    line = (self.mean("shoulder") - ankle)[:, :2]
    hip = (self.joints["pelvis"] - ankle)[:, :2]
    # The head is towards +x, so a positive cross product is above the line.
    return (line[:, 0] * hip[:, 1] - line[:, 1] * hip[:, 0]) / np.linalg.norm(
        line, axis=-1)

  def push_up_depth(self) -> np.ndarray:
    """Shoulder height over the wrists in arm lengths: 1 is straight arms."""
    return (self.height("shoulder") - self.height("wrist")) / (
        self.clip.body.arm_reach)

  def elbow_angle(self) -> np.ndarray:
    """The more bent elbow's angle in degrees; 180 is straight."""
    angles = []
    for side in "lr":
      upper = self.joints[f"shoulder_{side}"] - self.joints[f"elbow_{side}"]
      lower = self.joints[f"wrist_{side}"] - self.joints[f"elbow_{side}"]
      cosine = np.sum(upper * lower, axis=-1) / (
          np.linalg.norm(upper, axis=-1) * np.linalg.norm(lower, axis=-1))
      angles.append(np.degrees(np.arccos(np.clip(cosine, -1, 1))))
    return np.min(angles, axis=0)

  def hands_to_head(self) -> np.ndarray:
    """The farther hand's distance from the head centre in head radii."""
    return np.max([
        np.linalg.norm(self.joints[f"wrist_{side}"] - self.joints["head"],
                       axis=-1) for side in "lr"
    ], axis=0) / self.clip.body.radii["head"]

  def thigh_elevation(self) -> np.ndarray:
    """Degrees the knee-to-hip line rises over the horizontal, (T,)."""
    thigh = self.joints["pelvis"] - self.mean("knee")
    return np.degrees(np.arctan2(thigh[:, 1],
                                 np.linalg.norm(thigh[:, [0, 2]], axis=-1)))

  def shoulder_rise(self) -> np.ndarray:
    shoulders = self.height("shoulder")
    return shoulders - shoulders.min()

  def on_floor(self, joint: str, radius: str) -> bool:
    """Whether a joint's drawn part touches the floor in every frame."""
    return np.allclose(self.height(joint), self.clip.body.radii[radius])


Rule = tuple[str, Callable[[Motion], bool]]

_FEET_DOWN: Rule = ("feet stay on the floor", lambda m: np.allclose(
    m.lowest_foot(), m.clip.body.radii["foot"]))
_PUSH_UP_CONTACTS: list[Rule] = [
    ("hands on the floor", lambda m: m.on_floor("wrist", "hand")),
    ("toes on the floor", lambda m: m.on_floor("toe", "foot")),
]
_CRUNCH_LYING: Rule = ("pelvis on the floor",
                       lambda m: m.on_floor("pelvis", "torso_depth"))
_HANDS_AWAY: Rule = ("hands away from the head",
                     lambda m: m.hands_to_head().min() > 3.0)
_SHOULDERS_RISE: Rule = ("shoulders rise well",
                         lambda m: m.shoulder_rise()[m.peak] > 0.12 * m.h)

# Each class's form, as rules on the skeleton; margins in body heights.
RULES: dict[str, list[Rule]] = {
    "squat_correct": [
        ("hip below knee at the bottom", lambda m:
         m.height("pelvis")[m.peak] < m.height("knee")[m.peak] - 0.02 * m.h),
        ("standing at rest", lambda m:
         m.height("pelvis")[m.rest] > m.height("knee")[m.rest] + 0.2 * m.h),
        _FEET_DOWN,
    ],
    "squat_not-low": [
        ("hip always above knee", lambda m: np.all(
            m.height("pelvis") > m.height("knee") + 0.1 * m.h)),
        ("thighs well above parallel at the bottom",
         lambda m: m.thigh_elevation()[m.peak] > 25),
        ("yet it squats", lambda m:
         m.height("pelvis")[m.rest] - m.height("pelvis")[m.peak] > 0.08 * m.h),
        _FEET_DOWN,
    ],
    "pull-up_correct": [
        ("chin over the bar at the top", lambda m:
         m.height("chin")[m.peak] > m.height("bar")[m.peak] + 0.05 * m.h),
        ("chin under the bar when hanging", lambda m:
         m.height("chin")[m.rest] < m.height("bar")[m.rest] - 0.1 * m.h),
        ("straight arms when hanging", lambda m: m.elbow_angle()[m.rest] > 170),
        ("hands on the bar", lambda m: np.allclose(m.mean("wrist"),
                                                   m.joints["bar"])),
        ("feet off the floor", lambda m: m.lowest_foot().min() > 0.05 * m.h),
    ],
    "push-up_not-low": _PUSH_UP_CONTACTS + [
        ("body straight", lambda m:
         np.abs(m.hip_above_body_line()).max() < 0.02 * m.h),
        ("chest stops well above the floor",
         lambda m: m.push_up_depth()[m.peak] > 0.7),
    ],
    "push-up_butt-up": _PUSH_UP_CONTACTS + [
        ("hips piked up", lambda m: m.hip_above_body_line().min() > 0.1 * m.h),
        ("goes low", lambda m: m.push_up_depth()[m.peak] < 0.62),
    ],
    "push-up_not-straight": _PUSH_UP_CONTACTS + [
        ("hips sag", lambda m: m.hip_above_body_line().max() < -0.06 * m.h),
        ("sagging more at the bottom", lambda m:
         m.hip_above_body_line()[m.peak] <
         m.hip_above_body_line()[m.rest] - 0.03 * m.h),
        ("goes low", lambda m: m.push_up_depth()[m.peak] < 0.62),
    ],
    "crunch_correct": [_CRUNCH_LYING, _HANDS_AWAY, _SHOULDERS_RISE, _FEET_DOWN],
    "crunch_heels-up": [
        _CRUNCH_LYING, _HANDS_AWAY, _SHOULDERS_RISE,
        ("heels rise with the crunch", lambda m:
         m.lowest_foot()[m.peak] - m.lowest_foot()[m.rest] > 0.1 * m.h),
        ("feet high at the top",
         lambda m: m.lowest_foot()[m.peak] > 0.18 * m.h),
    ],
    "crunch_not-enough": [
        _CRUNCH_LYING, _HANDS_AWAY,
        ("shoulders barely rise",
         lambda m: m.shoulder_rise().max() < 0.06 * m.h),
        ("but they do rise",
         lambda m: m.shoulder_rise()[m.peak] > 0.015 * m.h),
        _FEET_DOWN,
    ],
    "crunch_bad-hands": [
        _CRUNCH_LYING,
        ("hands on the head", lambda m: m.hands_to_head().max() < 1.5),
        _SHOULDERS_RISE, _FEET_DOWN,
    ],
}


class ClassRulesTest(parameterized.TestCase):

  def test_every_class_has_rules(self):
    self.assertEqual(tuple(RULES), labels.EXERCISE_CLASSES)
    self.assertEqual(tuple(synthetic.CLASSES), labels.EXERCISE_CLASSES)

  @parameterized.named_parameters((label, label) for label in RULES)
  def test_rules_hold_on_the_skeleton(self, label):
    # Six subjects under each of two seeds.
    for seed in (0, 1):
      for index in range(6):
        clip = synthetic.sample_clip(label, index, seed)
        motion = Motion(clip, synthetic.clip_skeleton(clip))
        # Every clip shows a whole peak and a rest.
        phase = synthetic.rep_phase(clip)
        self.assertGreater(phase.max(), 0.99)
        self.assertLess(phase.min(), 0.01)
        for description, holds in RULES[label]:
          with self.subTest(seed=seed, clip=index, rule=description):
            self.assertTrue(holds(motion))

  def test_push_up_depth_does_not_tell_the_faults_apart(self):
    # Real sagging push-ups that went low were called butt-up while the
    # sag was always shallower than the pike: the body line must decide.
    depths = {}
    for label in ("push-up_butt-up", "push-up_not-straight"):
      depths[label] = []
      for index in range(20):
        clip = synthetic.sample_clip(label, index, 0)
        motion = Motion(clip, synthetic.clip_skeleton(clip))
        depths[label].append(motion.push_up_depth()[motion.peak])
    low = max(min(d) for d in depths.values())
    high = min(max(d) for d in depths.values())
    for label, values in depths.items():
      self.assertGreater(high - low, 0.6 * (max(values) - min(values)), label)

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
      for side in "lr":
        bone = np.linalg.norm(
            skeleton[f"{upper}_{side}"] - skeleton[f"{lower}_{side}"], axis=-1)
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

  def test_clip_lengths(self):
    for index in range(20):
      clip = synthetic.sample_clip("squat_correct", index, 0)
      self.assertBetween(clip.num_frames / clip.fps, 2.0, 4.5)
      self.assertLess(clip.rep_seconds, clip.num_frames / clip.fps)

  def test_default_conditions_vary_what_real_recordings_vary(self):
    clips = [synthetic.sample_clip(label, index, seed=0)
             for label in synthetic.CLASSES for index in range(8)]
    # Side (azimuth near 0 or 180), front (near 90) and in between.
    views = [90 - abs(90 - (c.azimuth % 360)) for c in clips]
    self.assertLess(min(views), 5)
    self.assertGreater(max(views), 80)
    self.assertTrue(any(30 < v < 60 for v in views))
    self.assertEqual({c.room for c in clips}, set(synthetic.ROOMS))
    self.assertTrue(any(c.width > c.height for c in clips))
    self.assertTrue(any(c.width < c.height for c in clips))
    for clip in clips:
      self.assertEqual(min(clip.width, clip.height), synthetic.DEFAULT_SHORT_SIDE)
    self.assertEqual({c.overlay for c in clips}, {False, True})
    self.assertGreater(np.ptp([c.jpeg_quality for c in clips]), 50)
    self.assertGreater(np.ptp([c.elevation for c in clips]), 20)
    self.assertGreater(np.ptp([c.fill for c in clips]), 0.4)
    heights = {c.body.height for c in clips}
    self.assertGreater(max(heights) - min(heights), 0.2)

  def test_conditions_bound_every_sample(self):
    conditions = synthetic.Conditions(
        views=((40.0, 65.0), (75.0, 90.0)), elevations=((20.0, 30.0),),
        heights=((1.5, 1.55),), girths=((1.3, 1.4),), rooms=("gym",),
        aspects=(9 / 16,), overlay_probability=0.0,
        jpeg_qualities=((100.0, 100.0),))
    views = []
    for label in synthetic.CLASSES:
      for index in range(4):
        clip = synthetic.sample_clip(label, index, 1, conditions=conditions)
        view = 90 - abs(90 - (clip.azimuth % 360))
        views.append(view)
        self.assertTrue(40 <= view <= 65 or 75 <= view <= 90, view)
        self.assertBetween(clip.elevation, 20, 30)
        self.assertBetween(clip.body.height, 1.5, 1.55)
        self.assertEqual(clip.room, "gym")
        self.assertEqual((clip.width, clip.height),
                         (synthetic.DEFAULT_SHORT_SIDE, 298))
        self.assertFalse(clip.overlay)
        self.assertEqual(clip.jpeg_quality, 100)
    # Both intervals are used, in proportion to their widths.
    self.assertTrue(any(v < 65 for v in views) and any(v > 75 for v in views))

  def test_rejects_unknown_class(self):
    with self.assertRaisesRegex(ValueError, "unknown class"):
      synthetic.sample_clip("burpee", 0, 0)


class RenderTest(absltest.TestCase):

  def test_frames_are_deterministic_per_seed(self):
    def render(seed):
      return synthetic.render_clip(
          synthetic.sample_clip("push-up_butt-up", 2, seed))

    frames = render(5)
    clip = synthetic.sample_clip("push-up_butt-up", 2, 5)
    self.assertEqual(frames.dtype, np.uint8)
    self.assertEqual(frames.shape[1:], (clip.height, clip.width, 3))
    self.assertEqual(min(frames.shape[1:3]), synthetic.DEFAULT_SHORT_SIDE)
    np.testing.assert_array_equal(frames, render(5))
    self.assertFalse(np.array_equal(frames[:10], render(6)[:10]))

  def test_standing_person_fills_much_of_the_height(self):
    clip = synthetic.sample_clip("squat_correct", 0, 0)
    frames = synthetic.render_clip(clip).astype(np.int16)
    rest = int(np.argmin(synthetic.rep_phase(clip)))
    moving = np.abs(frames - frames[rest]).max(axis=(0, 3)) > 60
    rows = np.flatnonzero(moving.any(axis=1))
    self.assertGreater((rows.max() - rows.min()) / clip.height, 0.3)


def _read_manifest(path: str) -> list[dict[str, str]]:
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def _stat_all(directory: str) -> dict[str, tuple[int, int]]:
  """Each file's (inode, mtime): a rewrite, even atomic, changes them."""
  stats = {}
  for root, _, names in os.walk(directory):
    for name in names:
      status = os.stat(os.path.join(root, name))
      stats[os.path.join(root, name)] = (status.st_ino, status.st_mtime_ns)
  return stats


def _read_bytes(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


class _TempDirTestCase(absltest.TestCase):
  """Temporary directories under absltest and pytest alike."""

  def _tempdir(self) -> str:
    return self.create_tempdir().full_path


class DatasetTest(_TempDirTestCase):

  def _generate(self, directory: str, **kwargs) -> str:
    settings = dict(clips_per_class=2, seed=0, num_subjects=2, **_SMALL)
    settings.update(kwargs)
    return synthetic.generate_dataset(directory, **settings)

  def test_manifest_lists_every_clip(self):
    directory = self._tempdir()
    manifest = self._generate(directory)
    self.assertEqual(manifest, os.path.join(directory, "manifest.csv"))
    with open(manifest, encoding="utf-8") as f:
      self.assertEqual(f.readline(), "path,label,subject\n")
    rows = _read_manifest(manifest)
    self.assertEqual([r["label"] for r in rows],
                     [label for label in labels.EXERCISE_CLASSES
                      for _ in range(2)])
    for row in rows:
      self.assertEqual(row["path"].split("/")[0], row["label"])
      self.assertTrue(os.path.isfile(os.path.join(directory, row["path"])))
    self.assertEqual({r["subject"] for r in rows}, {"0", "1"})
    # No temporary files are left behind.
    self.assertEqual([name for name in _stat_all(directory)
                      if os.path.basename(name).startswith(".")], [])

  def test_videos_decode_with_the_project_reader(self):
    directory = self._tempdir()
    self._generate(directory)
    clip = synthetic.sample_clip("crunch_bad-hands", 1, 0, num_subjects=2,
                                 **_SMALL)
    path = os.path.join(directory, synthetic.clip_path(clip.label, 1))
    decoded = video_io.read_video(path, fps=clip.fps,
                                  short_side=min(clip.height, clip.width))
    rendered = synthetic.render_clip(clip)
    self.assertEqual(decoded.shape, rendered.shape)
    # Lossy but close; swapped colour channels would be far off.
    self.assertLess(np.abs(decoded.astype(float) - rendered).mean(), 8.0)
    # The file's bytes follow from the seed alone.
    self.assertEqual(_read_bytes(path),
                     synthetic.encode_mp4(rendered, clip.fps))

  def test_rerun_completes_a_partial_output_and_else_does_nothing(self):
    directory = self._tempdir()
    manifest = self._generate(directory)
    rows = _read_manifest(manifest)
    before = _stat_all(directory)
    self._generate(directory)
    self.assertEqual(_stat_all(directory), before)

    lost = os.path.join(directory, rows[5]["path"])
    original = _read_bytes(lost)
    os.remove(lost)
    os.remove(manifest)
    self._generate(directory)
    self.assertEqual(_read_bytes(lost), original)
    self.assertEqual(_read_manifest(manifest), rows)
    after = _stat_all(directory)
    for name, stat in before.items():
      if name not in (lost, manifest):
        self.assertEqual(after[name], stat, name)

  def test_rerun_renders_damaged_clips_again(self):
    directory = self._tempdir()
    rows = _read_manifest(self._generate(directory))
    emptied, cut = (os.path.join(directory, rows[i]["path"]) for i in (2, 7))
    originals = {path: _read_bytes(path) for path in (emptied, cut)}
    with open(emptied, "wb"):
      pass
    with open(cut, "r+b") as f:
      f.truncate(len(originals[cut]) // 2)
    self._generate(directory)
    for path, original in originals.items():
      self.assertEqual(_read_bytes(path), original, path)

  def test_refuses_other_settings(self):
    directory = self._tempdir()
    self._generate(directory, clips_per_class=1)
    with self.assertRaisesRegex(
        ValueError, r"other settings \(seed 0 there, 1 now\); delete it"):
      self._generate(directory, clips_per_class=1, seed=1)

  def test_refusal_names_what_differs(self):
    directory = self._tempdir()
    self._generate(directory, clips_per_class=1)
    with self.assertRaisesRegex(
        ValueError, r"other settings \(conditions\.rooms \['plain', 'home', "
        r"'gym'\] there, \['gym'\] now\)"):
      self._generate(directory, clips_per_class=1,
                     conditions=synthetic.Conditions(rooms=("gym",)))
    settings_path = os.path.join(directory, synthetic.SETTINGS_NAME)
    with open(settings_path) as f:
      settings = json.load(f)
    settings["generator_version"] -= 1
    with open(settings_path, "w") as f:
      json.dump(settings, f)
    with self.assertRaisesRegex(
        ValueError, f"generator version {synthetic.GENERATOR_VERSION - 1}; "
        f"this is version {synthetic.GENERATOR_VERSION}: delete"):
      self._generate(directory, clips_per_class=1)

  def test_bad_conditions_fail_when_made(self):
    for bad, message in (({"rooms": ("bare",)}, "rooms must be some of"),
                         ({"aspects": (0.0,)}, "aspects must be positive"),
                         ({"views": ((10.0, -10.0),)}, "views must be"),
                         ({"fills": ()}, "fills must be"),
                         ({"jpeg_qualities": ((0.0, 90.0),)},
                          "jpeg_qualities must be within"),
                         ({"overlay_probability": 1.5},
                          "overlay_probability must be")):
      with self.subTest(**{k: str(v) for k, v in bad.items()}):
        with self.assertRaisesRegex(ValueError, message):
          synthetic.Conditions(**bad)

  def test_invalid_arguments_write_nothing(self):
    directory = os.path.join(self._tempdir(), "never")
    for bad, message in (({"clips_per_class": 0}, "clips_per_class must"),
                         ({"seed": -1}, "seed must"),
                         ({"short_side": 161}, "must be even"),
                         ({"fps": 0.0}, "fps must")):
      with self.subTest(**bad):
        with self.assertRaisesRegex(ValueError, message):
          self._generate(directory, **{"clips_per_class": 1, **bad})
        self.assertFalse(os.path.exists(directory))

  def test_workers_write_the_same_bytes(self):
    serial, parallel = self._tempdir(), self._tempdir()
    for directory, workers in ((serial, 1), (parallel, 2)):
      self._generate(directory, clips_per_class=1, num_workers=workers)
    for row in _read_manifest(os.path.join(serial, "manifest.csv")):
      self.assertEqual(_read_bytes(os.path.join(serial, row["path"])),
                       _read_bytes(os.path.join(parallel, row["path"])),
                       row["path"])


class CommandLineTest(_TempDirTestCase):

  def test_writes_dataset_and_contact_sheet(self):
    directory = self._tempdir()
    sheet = os.path.join(directory, "sheet.png")
    subprocess.run(
        [sys.executable, "-m", "i3d_demo.synthetic",
         f"--output_dir={directory}/data", "--clips_per_class=1", "--seed=2",
         f"--contact_sheet={sheet}", "--short_side=48",
         "--num_workers=1"],
        cwd=_REPO, check=True, capture_output=True)
    manifest = os.path.join(directory, "data", "manifest.csv")
    self.assertLen(_read_manifest(manifest), 10)
    self.assertEqual(_read_bytes(sheet)[:8], b"\x89PNG\r\n\x1a\n")
    image = cv2.imread(sheet)
    self.assertEqual(image.shape[0], 10 * 48)  # One row per class.
    frames = image[:, image.shape[1] - 6 * 64:]  # Six frames a row.
    for label, row in zip(labels.EXERCISE_CLASSES, np.split(frames, 10)):
      self.assertGreater(row.std(), 5.0, label)  # Not blank.

  def test_bad_input_is_one_error_line(self):
    directory = self._tempdir()
    taken = os.path.join(directory, "file")
    with open(taken, "w") as f:
      f.write("not a directory")
    for args, message in (
        (["--output_dir=" + directory, "--clips_per_class=0"],
         "--clips_per_class=0: 0 is not a positive integer"),
        (["--output_dir=" + directory, "--short_side=47"],
         "--short_side must be even"),
        (["--output_dir=" + taken], "error: .*file is not a directory"),
        (["--contact_sheet=" + directory], "error: .* is a directory"),
        (["--contact_sheet=" + taken + ".jpg"], "error: .*must end in .png")):
      with self.subTest(args=args):
        result = subprocess.run(
            [sys.executable, "-m", "i3d_demo.synthetic", *args], cwd=_REPO,
            capture_output=True, text=True)
        self.assertNotEqual(result.returncode, 0)
        self.assertNotIn("Traceback", result.stderr)
        self.assertRegex(result.stderr, message)


if __name__ == "__main__":
  absltest.main()
