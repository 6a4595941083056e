"""End-to-end tests of predict.py: Kinetics mode and trained exercise models."""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import cv2
import numpy as np
import pytest
import tensorflow as tf

from i3d import checkpoints
from i3d import config as config_lib
from i3d.eval import classify
from i3d import labels
from i3d.eval import runs as eval_runs
from i3d.train import checkpointer as train_checkpointer
from i3d import two_stream
from i3d.video import io as video_io
from tests import testdata

ROOT = testdata.ROOT
SAMPLE = testdata.CRICKET_RGB_GIF
TOP_5 = ["playing cricket", "robot dancing", "pumping fist", "breakdancing",
         "hurling (sport)"]


def run_predict(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, os.path.join(ROOT, "predict.py"),
                         *args], cwd=ROOT, capture_output=True, text=True,
                        check=False)


class ClipLoadingTest(absltest.TestCase):

  def test_gif_sample_decodes_to_model_range(self):
    clip = classify.load_gif_clip(SAMPLE)
    self.assertEqual(clip.shape, (79, 224, 224, 3))
    self.assertBetween(clip.min(), -1.0, -0.9)
    self.assertEqual(clip.max(), 1.0)

  def test_bad_npy_is_a_clear_error(self):
    tmp = self.create_tempdir().full_path
    path = os.path.join(tmp, "bad.npy")
    np.save(path, np.zeros([4, 16, 16], np.float32))
    with self.assertRaisesRegex(classify.ClipError,
                                f"{path}: expected a .*got shape"):
      classify.load_npy_clip(path)
    np.save(path, np.full([1, 2, 8, 8, 3], 3.0, np.float32))
    with self.assertRaisesRegex(classify.ClipError, r"in \[-1, 1\]"):
      classify.load_npy_clip(path)
    result = run_predict(f"--npy={path}")
    self.assertNotEqual(result.returncode, 0)
    self.assertIn(f"error: {path}", result.stderr)
    self.assertNotIn("Traceback", result.stderr)

  def test_top_k_probabilities(self):
    top = classify.top_k(np.array([1.0, 3.0, 2.0]), ["a", "b", "c"], k=2)
    self.assertEqual([p.label for p in top], ["b", "c"])
    expected = np.exp([3.0, 2.0]) / np.exp([1.0, 2.0, 3.0]).sum()
    np.testing.assert_allclose([p.probability for p in top], expected)


@pytest.mark.slow
class CricketSampleTest(absltest.TestCase):
  """rgb_scratch on DeepMind's preprocessed sample, as evaluate_sample.py."""

  def check_output(self, result, json_path):
    self.assertEqual(result.returncode, 0, result.stderr)
    lines = result.stdout.strip().splitlines()
    self.assertTrue(lines[0].startswith("Norm of logits: 83.241"), lines[0])
    self.assertEqual(lines[2], "Top classes and probabilities")
    self.assertEqual([line.split(" ", 2)[2] for line in lines[3:8]], TOP_5)
    with open(json_path) as f:
      record = json.load(f)
    self.assertAlmostEqual(record["logits_norm"], 83.2417, delta=1e-3)
    self.assertEqual([p["label"] for p in record["top_k"]], TOP_5)
    top = record["top_k"][0]
    self.assertAlmostEqual(top["logit"], 17.6404, delta=1e-4)
    self.assertEqual(top["index"], 227)
    self.assertEqual(set(top), {"label", "index", "logit", "probability"})

  def test_gif_and_npy_give_deepmind_numbers(self):
    with tempfile.TemporaryDirectory() as tmp:
      npy = os.path.join(tmp, "cricket_rgb.npy")
      np.save(npy, classify.load_gif_clip(SAMPLE)[None])
      for flag in (f"--gif={SAMPLE}", f"--npy={npy}"):
        json_path = os.path.join(tmp, "out.json")
        self.check_output(
            run_predict(flag, f"--output_json={json_path}", "--top_k=5"),
            json_path)


class ExerciseModeTest(absltest.TestCase):
  """predict.py --checkpoint_dir on a run of an RGB model (random weights)."""

  CLASSES = ("right", "left")

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = testdata.class_tempdir(cls)
    cache_dir = testdata.prepare_direction_cache(cls.root, cls.CLASSES)
    cls.train_dir = os.path.join(cls.root, "run")
    config = config_lib.TrainConfig(cache_dir=cache_dir,
                                  train_dir=cls.train_dir,
                                  classes=cls.CLASSES, stream="rgb",
                                  num_frames=4, crop_size=32)
    config_lib.save_config(config)
    # The layout train.py's Trainer saves (weights need not be trained here).
    model = two_stream.TwoStreamI3d(len(cls.CLASSES), config.streams)
    checkpoints.ensure_built(model.streams["rgb"], 3)
    tf.train.Checkpoint(model=model).save(
        os.path.join(cls.train_dir, train_checkpointer.CHECKPOINT_SUBDIR, "ckpt"))

  def tempdir(self) -> str:
    return self.create_tempdir().full_path

  def test_folder_gives_json_lines_and_reports_a_corrupt_video(self):
    folder = self.tempdir()
    for name, step in (("a.mp4", 3), ("b.mp4", -3)):
      testdata.write_moving_square(os.path.join(folder, name), step=step)
    with open(os.path.join(folder, "broken.mp4"), "w") as f:
      f.write("not a video " * 50)
    with open(os.path.join(folder, "notes.txt"), "w") as f:
      f.write("not a video either")
    output_json = os.path.join(folder, "out", "predictions.json")

    result = run_predict(f"--video={folder}",
                         f"--checkpoint_dir={self.train_dir}",
                         f"--output_json={output_json}", "--top_k=2")

    self.assertEqual(result.returncode, 1, result.stderr)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    self.assertEqual([os.path.basename(r["input"]) for r in records],
                     ["a.mp4", "b.mp4", "broken.mp4"])
    for record in records[:2]:
      self.assertCountEqual([p["label"] for p in record["top_k"]],
                            self.CLASSES)
      self.assertAlmostEqual(sum(p["probability"] for p in record["top_k"]),
                             1.0, places=5)
    self.assertIn("broken.mp4: cannot be opened as a video",
                  records[2]["error"])
    self.assertIn("1 of 3 videos could not be classified", result.stderr)
    self.assertNotIn("Traceback", result.stderr)
    with open(output_json) as f:
      self.assertEqual(json.load(f), records)

  def test_timeline_and_annotated_video(self):
    folder = self.tempdir()
    clip = testdata.write_moving_square(os.path.join(folder, "workout.mp4"),
                                        num_frames=45)
    annotated = os.path.join(folder, "annotated.mp4")
    output_json = os.path.join(folder, "timeline.json")

    result = run_predict(f"--video={clip}",
                         f"--checkpoint_dir={self.train_dir}", "--timeline", "--window_s=0.8", "--stride_s=0.4",
                         f"--annotated_video={annotated}",
                         f"--output_json={output_json}")

    self.assertEqual(result.returncode, 0, result.stderr)
    entries = json.loads(result.stdout)
    # 45 frames at the run's 25 fps: 0.8 s windows every 0.4 s, and one
    # aligned to the end, so every moment of the 1.8 s is covered.
    self.assertEqual([(e["start"], e["end"]) for e in entries],
                     [(0.0, 0.8), (0.4, 1.2), (0.8, 1.6), (1.0, 1.8)])
    # The script's timeline is the library's for the run.
    run = eval_runs.load_run(self.train_dir)
    expected = classify.classify_timeline(
        run.classifier, clip, run.preprocess, run.config.crop_size,
        window_s=0.8, stride_s=0.4)
    self.assertEqual([e["label"] for e in entries],
                     [e["label"] for e in expected])
    np.testing.assert_allclose([e["probability"] for e in entries],
                               [e["probability"] for e in expected],
                               atol=1e-5)
    with open(output_json) as f:
      self.assertEqual(json.load(f), entries)
    self.assertEqual(testdata.count_frames(annotated), 45)
    capture = cv2.VideoCapture(annotated)
    _, frame = capture.read()
    capture.release()
    # The label is drawn on a darkened banner across the top.
    self.assertLess(frame[:3].mean(), 0.5 * frame[-3:].mean())


@pytest.mark.slow
class KineticsVideoTest(absltest.TestCase):
  """--video in Kinetics mode: a video file decoded and preprocessed."""

  def test_cricket_video_file(self):
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "cricket.mp4")
      frames = np.round((classify.load_gif_clip(SAMPLE) + 1.0) / 2.0 * 255)
      video_io.write_video(path, frames.astype(np.uint8), 25.0)
      json_path = os.path.join(tmp, "out.json")
      result = run_predict(f"--video={path}", f"--output_json={json_path}",
                           "--top_k=5")
      self.assertEqual(result.returncode, 0, result.stderr)
      self.assertEqual(result.stdout.splitlines()[2],
                       "Top classes and probabilities")
      with open(json_path) as f:
        record = json.load(f)
      self.assertEqual(record["input"], path)
      self.assertEqual(record["top_k"][0]["label"], "playing cricket")


@pytest.mark.slow
class RealWorldInputsTest(absltest.TestCase):
  """Inputs as users have them (issue 11)."""

  def test_uncropped_clip_and_checkpoint_named_by_its_index_file(self):
    clip_path = os.path.join(testdata.CASES, "full_frame_256x340.npy")
    with tempfile.TemporaryDirectory() as tmp:
      prefix = checkpoints.write_random_checkpoint(tmp)
      json_path = os.path.join(tmp, "out.json")
      result = run_predict(f"--npy={clip_path}",
                           f"--checkpoint={prefix}.index",
                           f"--output_json={json_path}")
      self.assertEqual(result.returncode, 0, result.stderr)
      with open(json_path) as f:
        record = json.load(f)
      classifier = classify.Classifier.from_deepmind_checkpoints(
          {"rgb": prefix}, labels.resolve_classes("kinetics400"))
    self.assertNotIn("Traceback", result.stderr)
    note = (f"{clip_path}: 256x340 frames, not the model's 224x224 crops: "
            "classified fully convolutionally, logits averaged over 2x5 "
            "spatial position(s)")
    self.assertEqual(result.stdout.splitlines()[0], f"Note: {note}")
    self.assertEqual(record["note"], note)
    # The mean of the logits of the 2x5 positions.
    net = classifier.model.streams["rgb"]
    clip = np.load(clip_path)[None]
    per_position = net.logits(net.pool(net.features(clip, is_training=False)),
                              is_training=False)
    expected = tf.reduce_mean(per_position, axis=[1, 2, 3])[0].numpy()
    self.assertEqual(record["top_k"][0]["label"],
                     classifier.classes[int(np.argmax(expected))])
    self.assertAlmostEqual(record["logits_norm"], np.linalg.norm(expected),
                           delta=1e-3 * np.linalg.norm(expected))

  def test_browser_recording_is_classified_like_its_constant_rate_copy(self):
    # OpenCV reports the recording at 1000 fps with 3000 frames; 90 frames
    # over 3 s decode. Both are about 75 frames at 25 fps.
    recording = os.path.join(testdata.CASES, "browser_recording.webm")
    copy = os.path.join(testdata.CASES, "constant_rate_copy.webm")
    result = run_predict(f"--video={recording},{copy}", "--max_frames=0")
    self.assertEqual(result.returncode, 0, result.stderr)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    self.assertEqual([r["input"] for r in records], [recording, copy])
    top = [r["top_k"][0] for r in records]
    self.assertEqual(top[0]["label"], top[1]["label"])
    # Jittered timestamps move a few frame boundaries: close, not equal.
    self.assertAlmostEqual(top[0]["probability"], top[1]["probability"],
                           delta=0.1)


if __name__ == "__main__":
  absltest.main()
