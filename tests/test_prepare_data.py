"""End-to-end tests of the prepare_data.py command line, kill -9 included."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

from absl.testing import absltest
import tensorflow as tf

from i3d.data import cache as data_cache
from i3d.video import preprocess as video_preprocess
from tests import testdata


REPO = testdata.ROOT
CLASSES = "squat_correct,crunch_correct"


def write_clip(path: str, num_frames: int, seed: int) -> None:
  """Writes a 25 fps 64x48 clip of random frames."""
  testdata.write_clip(path, testdata.random_frames(num_frames, seed=seed))


def command(*flags: str) -> list[str]:
  return [sys.executable, os.path.join(REPO, "prepare_data.py"),
          f"--classes={CLASSES}", *flags]


def run(*flags: str) -> subprocess.CompletedProcess:
  return subprocess.run(command(*flags), cwd=REPO, capture_output=True,
                        text=True, timeout=120, check=False)


class PrepareDataTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.data = self.create_tempdir().full_path
    self.cache = os.path.join(self.create_tempdir().full_path, "cache")

  def test_failures_are_listed_and_the_exit_status_says_so(self):
    for i, label in enumerate(["squat_correct", "crunch_correct"] * 2):
      write_clip(os.path.join(self.data, label, f"v{i}.mp4"), 8, seed=i)
    bad = os.path.join(self.data, "squat_correct", "broken.mp4")
    with open(bad, "wb") as f:
      f.write(b"\x00" * 1000)

    result = run(f"--data_dir={self.data}", f"--cache_dir={self.cache}",
                 "--prepare_workers=2", "--flow_algorithm=dis", "--short_side=48",
                 "--eval_fraction=0.5")

    self.assertEqual(result.returncode, 1, result.stderr)
    self.assertIn(f"{bad}: cannot be opened as a video", result.stderr)
    self.assertIn("4 of 5 videos ready", result.stderr)
    with open(os.path.join(self.cache, "splits.json")) as f:
      splits = json.load(f)
    self.assertEqual((len(splits["train"]), len(splits["eval"])), (2, 2))
    info = data_cache.read_cache(self.cache)
    self.assertEqual(info.config, video_preprocess.PreprocessConfig(
        short_side=48, flow_algorithm="dis"))
    self.assertLen(info.entries, 4)

  def test_configuration_errors_exit_2_with_one_clear_line(self):
    write_clip(os.path.join(self.data, "jumping_jacks", "a.mp4"), 4, seed=0)
    result = run(f"--data_dir={self.data}", f"--cache_dir={self.cache}")
    self.assertEqual(result.returncode, 2, result.stderr)
    self.assertIn("jumping_jacks: folder name 'jumping_jacks' is not a class",
                  result.stderr)
    self.assertNotIn("Traceback", result.stderr)

  def test_kill_9_leaves_no_partial_entry_and_the_rerun_resumes(self):
    # TV-L1 takes about 0.1 s per frame pair even at this size, so the run is
    # still busy with the other videos when the first entry appears.
    num_videos = 4
    for i in range(num_videos):
      write_clip(os.path.join(self.data, "squat_correct", f"v{i}.mp4"), 12,
                 seed=i)
    records = os.path.join(self.cache, "videos", "*.json")
    process = subprocess.Popen(
        command(f"--data_dir={self.data}", f"--cache_dir={self.cache}",
                "--prepare_workers=1", "--short_side=48"),
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
      deadline = time.monotonic() + 90
      while not glob.glob(records) and time.monotonic() < deadline:
        time.sleep(0.02)
    finally:
      # The whole process group, as a crash or `kill -9` of the job would.
      os.killpg(process.pid, signal.SIGKILL)
      process.wait()

    done = glob.glob(records)
    self.assertNotEmpty(done)
    self.assertLess(len(done), num_videos)
    self.assertFalse(os.path.exists(os.path.join(self.cache, "metadata.json")))
    # Every entry with a record is complete: both streams, every frame.
    for record_path in done:
      with open(record_path) as f:
        record = json.load(f)
      for stream in ("rgb", "flow"):
        with open(record_path[:-len(".json")] + f".{stream}.pb", "rb") as f:
          example = tf.train.SequenceExample.FromString(f.read())
        frames = example.feature_lists.feature_list[f"{stream}/encoded"].feature
        self.assertLen(frames, record["num_frames"])

    report = data_cache.prepare_dataset(
        self.cache, data_dir=self.data, classes=CLASSES,
        config=video_preprocess.PreprocessConfig(short_side=48))
    self.assertTrue(report.ok, report.summary())
    self.assertEqual((report.num_cached, report.num_prepared),
                     (len(done), num_videos - len(done)))
    self.assertEmpty(glob.glob(os.path.join(self.cache, "**", ".*.tmp"),
                               recursive=True))
    self.assertLen(data_cache.read_cache(self.cache).entries, num_videos)


if __name__ == "__main__":
  absltest.main()
