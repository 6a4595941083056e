"""The tests' fixtures: paths, temporary directories, videos, caches.

One place for what several test modules make: the repository and DeepMind's
reference files (`ROOT`, `REFERENCE`), class-level temporary directories
(`class_tempdir`; per test, absltest's `self.create_tempdir()`), test videos
(`write_clip` over the frame makers here), prepared caches and checkpoints
(`checkpoints.write_random_checkpoint`).
"""

import csv
import os
import shutil
import tempfile
from typing import Mapping, Optional, Sequence, Tuple

from absl.testing import absltest
import cv2
import numpy as np

from i3d import kinetics_weights
from i3d.data import cache as data_cache
from i3d.video import io as video_io
from i3d.video import preprocess as video_preprocess

# The repository root (scripts, configs, checkpoints/).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# ../shared beside the repository, or $I3D_SHARED_DIR (as in Bazel's
# WORKSPACE).
_SHARED = (os.environ.get("I3D_SHARED_DIR") or
           os.path.join(ROOT, "..", "shared"))
# DeepMind's kinetics-i3d reference files.
REFERENCE = os.path.join(_SHARED, "reference", "kinetics-i3d")
# Inputs as real users' files are (issue 11): see cases/README.md.
CASES = os.path.join(_SHARED, "cases")
# DeepMind's preprocessed cricket sample, RGB (79 frames, 224x224).
CRICKET_RGB_GIF = os.path.join(REFERENCE, "data",
                               "v_CricketShot_g04_c01_rgb.gif")
# The classes of `make_direction_dataset`'s videos by default.
DIRECTION_CLASSES = ("right", "left")
# The pan speed of `panning_frames`, in pixels per frame.
PAN_SPEED_PX = 2


def reference_checkpoint(name: str) -> str:
  """The prefix of one of DeepMind's checkpoints (index only), e.g. rgb_scratch."""
  return os.path.join(REFERENCE, "checkpoints", name, "model.ckpt")


def class_tempdir(test_class: type) -> str:
  """A temporary directory for the data a test class shares (setUpClass).

  It lives where absltest's per-test `create_tempdir` puts its directories,
  and is removed after the class's tests.
  """
  path = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
  test_class.addClassCleanup(shutil.rmtree, path, ignore_errors=True)
  return path


def write_clip(path: str, frames: np.ndarray, fps: float = 25.0) -> str:
  """Writes uint8 RGB frames (T, H, W, 3) as a video; returns the path."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  video_io.write_video(path, frames, fps)
  return path


def write_not_a_video(path: str) -> str:
  """Writes a text file with a video's name: no decoder can open it."""
  with open(path, "w", encoding="utf-8") as f:
    f.write("not a video " * 50)
  return path


def random_frames(num_frames: int, height: int = 48, width: int = 64,
                  seed: int = 0) -> np.ndarray:
  """Uniformly random uint8 RGB frames (T, H, W, 3): every clip unique."""
  return np.random.default_rng(seed).integers(
      0, 256, (num_frames, height, width, 3), dtype=np.uint8)


def panning_frames(num_frames: int, height: int = 48, width: int = 64,
                   seed: int = 0) -> np.ndarray:
  """A random texture panning right by PAN_SPEED_PX per frame, uint8 RGB.

  Every frame and every crop of it is unique, and flow x is positive almost
  everywhere. Colours vary mostly in brightness, as in camera footage (random
  hues would make JPEG's halved colour resolution the largest error).
  """
  rng = np.random.default_rng(seed)
  wide = width + PAN_SPEED_PX * num_frames
  coarse = rng.integers(0, 256, (height // 4, wide // 4 + 1)).astype(np.uint8)
  gray = cv2.resize(coarse, (wide, height), interpolation=cv2.INTER_CUBIC)
  tint = np.array([1.0, 0.85, 0.7]) + rng.uniform(-0.1, 0.1, 3)
  texture = np.clip(gray[..., None] * tint, 0, 255).astype(np.uint8)
  start = PAN_SPEED_PX * num_frames
  return np.stack([
      texture[:, start - PAN_SPEED_PX * t:start - PAN_SPEED_PX * t + width]
      for t in range(num_frames)
  ])


def write_moving_square(path: str, num_frames: int = 12, height: int = 40,
                        width: int = 48, fps: float = 25.0, step: int = 2,
                        seed: int = 0, step_y: int = 0) -> str:
  """Writes an mp4 of a textured square moving (`step`, `step_y`) px a frame.

  The texture depends on `seed` only; the square wraps around at the edges.
  """
  rng = np.random.RandomState(seed)
  texture = rng.randint(0, 255, (12, 12, 3), dtype=np.uint8)
  frames = np.full((num_frames, height, width, 3), 90, np.uint8)
  for t, frame in enumerate(frames):
    x = (width // 2 - 6 + step * (t - num_frames // 2)) % (width - 12)
    y = (height // 2 - 6 + step_y * (t - num_frames // 2)) % (height - 12)
    frame[y:y + 12, x:x + 12] = texture
  return write_clip(path, frames, fps)


def count_frames(path: str) -> int:
  """Counts the frames OpenCV decodes from a video file."""
  capture = cv2.VideoCapture(path)
  count = 0
  while capture.read()[0]:
    count += 1
  capture.release()
  return count


def make_direction_dataset(
    root: str, classes: Sequence[str] = ("right", "left"),
    videos_per_class: int = 4, num_subjects: int = 4,
    motions: Optional[Mapping[str, Sequence[Tuple[int, int]]]] = None) -> str:
  """Videos whose class is the motion of a square; returns the manifest.

  Args:
    root: where the videos and manifest.csv go.
    classes: class names.
    videos_per_class: videos of each class.
    num_subjects: video i's subject is `s{i % num_subjects}`.
    motions: {class: (x, y) steps in px per frame}, video i of a class taking
      step i modulo their number; video i of every class then has the same
      texture, so only the motion tells the classes apart. None: even classes
      move 3 px right and odd ones 3 px left, with a texture per video.
  """
  os.makedirs(root, exist_ok=True)
  rows = []
  for label_index, label in enumerate(classes):
    for i in range(videos_per_class):
      name = f"{label}_{i}.mp4"
      if motions is None:
        step = (3 if label_index % 2 == 0 else -3, 0)
        seed = label_index * 100 + i
      else:
        step, seed = motions[label][i % len(motions[label])], i
      write_moving_square(os.path.join(root, name), step=step[0],
                          step_y=step[1], seed=seed)
      rows.append({"path": name, "label": label,
                   "subject": f"s{i % num_subjects}"})
  manifest = os.path.join(root, "manifest.csv")
  with open(manifest, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=["path", "label", "subject"])
    writer.writeheader()
    writer.writerows(rows)
  return manifest


def prepare_direction_cache(
    root: str, classes: Sequence[str] = DIRECTION_CLASSES,
    videos_per_class: int = 4,
    motions: Optional[Mapping[str, Sequence[Tuple[int, int]]]] = None) -> str:
  """A prepared cache (RGB and DIS flow at 36 px) of the direction videos."""
  manifest = make_direction_dataset(os.path.join(root, "videos"), classes,
                                    videos_per_class, motions=motions)
  cache_dir = os.path.join(root, "cache")
  report = data_cache.prepare_dataset(
      cache_dir, manifest=manifest, classes=list(classes),
      config=video_preprocess.PreprocessConfig(short_side=36, flow_algorithm="dis"),
      eval_fraction=0.25, seed=0)
  assert report.ok, report.summary()
  return cache_dir


class CallCounter:
  """Calls a function, recording each call's arguments and videos."""

  def __init__(self, function, videos_arg: Optional[int] = None):
    """Wraps `function`; `videos_arg`: the position of its entries argument."""
    self.function = function
    self.videos_arg = videos_arg
    self.args = []
    self.videos = []

  @property
  def calls(self) -> int:
    return len(self.args)

  def __call__(self, *args, **kwargs):
    self.args.append(args)
    if self.videos_arg is not None:
      self.videos += [e.path for e in args[self.videos_arg]]
    return self.function(*args, **kwargs)


class DirectionCacheTest(absltest.TestCase):
  """Shares one prepared direction cache and the Kinetics RGB weights.

  Kinetics weights give features that tell the clips apart; random weights
  through 57 batch-normalised layers give near-constant ones.
  """

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = class_tempdir(cls)
    cls.cache_dir = prepare_direction_cache(cls.root, DIRECTION_CLASSES)
    cls.rgb_checkpoint = kinetics_weights.fetch_rgb_scratch(
        os.path.join(ROOT, "checkpoints"))
