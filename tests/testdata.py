"""Small data the tests make: videos, prepared datasets, checkpoints."""

import csv
import os
from typing import Sequence

import cv2
import numpy as np

from i3d.data import cache as dataset
from i3d.video import preprocess as video


def write_moving_square(path: str, num_frames: int = 12, height: int = 40,
                        width: int = 48, fps: float = 25.0, step: int = 2,
                        seed: int = 0) -> str:
  """Writes an mp4 of a textured square moving `step` px a frame (signed)."""
  rng = np.random.RandomState(seed)
  texture = rng.randint(0, 255, (12, 12, 3), dtype=np.uint8)
  background = np.full((height, width, 3), 90, np.uint8)
  writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps,
                           (width, height))
  for t in range(num_frames):
    frame = background.copy()
    x = (width // 2 - 6 + step * (t - num_frames // 2)) % (width - 12)
    y = height // 2 - 6
    frame[y:y + 12, x:x + 12] = texture
    writer.write(frame)
  writer.release()
  return path


def count_frames(path: str) -> int:
  """Counts the frames OpenCV decodes from a video file."""
  capture = cv2.VideoCapture(path)
  count = 0
  while capture.read()[0]:
    count += 1
  capture.release()
  return count


def make_direction_dataset(root: str, classes: Sequence[str] = ("right", "left"),
                           videos_per_class: int = 4,
                           num_subjects: int = 4) -> str:
  """Videos whose class is the direction of motion; returns the manifest."""
  os.makedirs(root, exist_ok=True)
  rows = []
  for label_index, label in enumerate(classes):
    step = 3 if label_index % 2 == 0 else -3
    for i in range(videos_per_class):
      name = f"{label}_{i}.mp4"
      write_moving_square(os.path.join(root, name), step=step,
                          seed=label_index * 100 + i)
      rows.append({"path": name, "label": label,
                   "subject": f"s{i % num_subjects}"})
  manifest = os.path.join(root, "manifest.csv")
  with open(manifest, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=["path", "label", "subject"])
    writer.writeheader()
    writer.writerows(rows)
  return manifest


def prepare_direction_cache(root: str, classes: Sequence[str] = ("right",
                                                                 "left"),
                            videos_per_class: int = 4) -> str:
  """A prepared cache (RGB and DIS flow at 36 px) of the direction videos."""
  manifest = make_direction_dataset(os.path.join(root, "videos"), classes,
                                    videos_per_class)
  cache_dir = os.path.join(root, "cache")
  report = dataset.prepare_dataset(
      cache_dir, manifest=manifest, classes=list(classes),
      config=video.PreprocessConfig(short_side=36, flow_algorithm="dis"),
      eval_fraction=0.25, seed=0)
  assert report.ok, report.summary()
  return cache_dir
