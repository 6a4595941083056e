"""Tests for evaluate.py and i3d.eval (runs, evaluate, classify) on a tiny trained two-stream run."""

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
import cv2
import numpy as np

from i3d import checkpoints
from i3d import config as config_lib
from i3d.data import cache as data_cache
from i3d.data import pipeline as data_pipeline
from i3d.eval import classify
from i3d.eval import evaluate as evaluation
from i3d.eval import metrics as eval_metrics
from i3d.eval import runs as eval_runs
from i3d.train import checkpointer as train_checkpointer
from i3d.train import loop as train_loop
from i3d.video import preprocess as video_preprocess
from tests import testdata

ROOT = testdata.ROOT
CLASSES = ("right", "left")
METRIC_KEYS = {"top1", "top_k", "mean_class_accuracy", "per_class",
               "confusion_matrix", "classes", "num_videos"}


def run_evaluate(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, os.path.join(ROOT, "evaluate.py"),
                         *args], cwd=ROOT, capture_output=True, text=True,
                        check=False)


class _Run:
  """One run shared by every test (setUpModule): 1 step of a joint model.

  Its cache holds the 8 direction videos of 12 frames (36 px, DIS flow); the
  eval split is the videos of one subject. The run evaluates whole videos,
  centre crop.
  """
  root: str
  cache_dir: str
  train_dir: str
  model: eval_runs.TrainedModel
  eval_paths: tuple


def setUpModule():
  _Run.root = tempfile.mkdtemp(dir=absltest.get_default_test_tmpdir())
  _Run.cache_dir = testdata.prepare_direction_cache(_Run.root, CLASSES)
  _Run.train_dir = os.path.join(_Run.root, "run")
  config = config_lib.TrainConfig(
      cache_dir=_Run.cache_dir, train_dir=_Run.train_dir, classes=CLASSES,
      stream="joint", num_frames=4, crop_size=32, batch_size=2, num_steps=1,
      feature_views=1, export=False, rgb_checkpoint=(
          checkpoints.write_random_checkpoint(os.path.join(_Run.root, "rgb"))),
      # As train.py: the run saves its cache's preprocessing.
      preprocess=data_cache.read_cache(_Run.cache_dir).config)
  config_lib.save_config(config)
  train_loop.Trainer(config).train()
  _Run.model = eval_runs.load_run(_Run.train_dir)
  _Run.eval_paths = data_cache.read_cache(_Run.cache_dir).splits["eval"]


def tearDownModule():
  shutil.rmtree(_Run.root)


class TrainedRunTest(absltest.TestCase):
  """Gives the tests the shared run's attributes."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    for name in ("root", "cache_dir", "train_dir", "model", "eval_paths"):
      setattr(cls, name, getattr(_Run, name))

  def tempdir(self) -> str:
    return self.create_tempdir().full_path

  def assert_metrics_schema(self, metrics, num_videos):
    self.assertEqual(set(metrics), METRIC_KEYS | {"streams"})
    self.assertEqual(list(metrics["streams"]), ["rgb", "flow", "joint"])
    for stream_metrics in metrics["streams"].values():
      self.assertEqual(set(stream_metrics), METRIC_KEYS)
      self.assertEqual(stream_metrics["classes"], list(CLASSES))
      self.assertEqual(stream_metrics["num_videos"], num_videos)
      self.assertEqual(np.sum(stream_metrics["confusion_matrix"]), num_videos)
    self.assertEqual(metrics["top1"], metrics["streams"]["joint"]["top1"])


class EvaluateModelTest(TrainedRunTest):

  def test_evaluate_train_dir_writes_eval_metrics(self):
    output_dir = self.tempdir()
    result = evaluation.evaluate_train_dir(self.train_dir, output_dir=output_dir)

    with open(os.path.join(self.train_dir, evaluation.METRICS_FILE)) as f:
      metrics = json.load(f)
    self.assertEqual(metrics, json.loads(json.dumps(result.metrics)))
    self.assert_metrics_schema(metrics, len(self.eval_paths))
    self.assertEqual([os.path.relpath(p, os.path.dirname(self.cache_dir))
                      for p in result.paths],
                     [os.path.join("videos", p) for p in self.eval_paths])
    np.testing.assert_allclose(result.logits["joint"],
                               result.logits["rgb"] + result.logits["flow"])
    self.assertCountEqual(os.listdir(output_dir), [
        "metrics.json", "predictions.csv", "confusion_matrix.png",
        "confusion_matrix_rgb.png", "confusion_matrix_flow.png"])

  def test_multi_view_averages_the_views(self):
    config = eval_runs.with_views(self.model.config, num_frames=4, num_clips=2,
                                num_crops=3)
    result = evaluation.evaluate_model(self.model.classifier, config, split=None)

    self.assert_metrics_schema(result.metrics, 8)
    first = next(iter(data_pipeline.make_eval_dataset(
        self.cache_dir, "train", ("rgb", "flow"), num_frames=4, crop_size=32,
        num_clips=2, num_crops=3)))
    self.assertEqual(first["rgb"].shape, (6, 4, 32, 32, 3))
    views = self.model.classifier.logits(
        {s: first[s].numpy() for s in ("rgb", "flow")})
    for stream in ("rgb", "flow"):
      np.testing.assert_allclose(result.logits[stream][0],
                                 views[stream].mean(axis=0), rtol=1e-4,
                                 atol=1e-5)

  def test_views_that_cannot_be_are_refused(self):
    config = self.model.config
    with self.assertRaisesRegex(ValueError, "same clip"):
      eval_runs.with_views(config, num_clips=2, whole_video=True)
    with self.assertRaisesRegex(ValueError,
                                "eval_num_crops must be one of 1, 3, got 2"):
      eval_runs.with_views(config, num_frames=4, num_crops=2)
    self.assertIsNone(eval_runs.with_views(config).eval_num_frames)


class LoadErrorsTest(TrainedRunTest):

  def test_empty_directory_has_no_checkpoint(self):
    empty = self.tempdir()
    with self.assertRaisesRegex(eval_runs.ModelError,
                                f"{empty}: no checkpoint in"):
      eval_runs.load_run(empty)

  def test_classes_differing_from_the_checkpoint(self):
    with self.assertRaisesRegex(
        eval_runs.ModelError, r"differ from the class list of the checkpoint.*"
        r"not in the checkpoint \['squat'\]"):
      eval_runs.load_run(self.train_dir, classes=["right", "squat"])
    with self.assertRaisesRegex(eval_runs.ModelError, "another order"):
      eval_runs.load_run(self.train_dir, classes=["left", "right"])

  def test_config_class_list_not_matching_the_logits(self):
    copy = os.path.join(self.tempdir(), "run")
    shutil.copytree(self.train_dir, copy)
    config_path = os.path.join(copy, config_lib.CONFIG_FILE)
    with open(config_path) as f:
      config = json.load(f)
    config["classes"].append("up")
    with open(config_path, "w") as f:
      json.dump(config, f)
    with self.assertRaisesRegex(
        eval_runs.ModelError, r"rgb logits have 2 classes but .*config.json "
        r"lists 3 \(right, left, up\)"):
      eval_runs.load_run(copy)

  def test_checkpoint_named_by_one_of_its_files_or_its_directory(self):
    latest = train_checkpointer.latest_checkpoint(self.train_dir)
    ckpt_dir = os.path.join(self.train_dir,
                            train_checkpointer.CHECKPOINT_SUBDIR)
    for name in (latest + ".index", latest + ".data-00000-of-00001", ckpt_dir):
      self.assertEqual(eval_runs.load_run(self.train_dir, name).checkpoint,
                       latest)

  def test_checkpoint_of_another_kind(self):
    kinetics = checkpoints.write_random_checkpoint(
        os.path.join(self.tempdir(), "kinetics"))
    with self.assertRaisesRegex(eval_runs.ModelError,
                                "not a checkpoint written by train.py"):
      eval_runs.load_run(self.train_dir, checkpoint=kinetics)
    with self.assertRaisesRegex(eval_runs.ModelError,
                                "no checkpoint.*leave out --checkpoint"):
      eval_runs.load_run(self.train_dir, checkpoint=kinetics + "-missing")

  def test_a_folder_inside_the_run_names_the_run(self):
    with self.assertRaisesRegex(
        eval_runs.ModelError, f"inside the run {self.train_dir}: pass the "
        f"run's directory, --checkpoint_dir={self.train_dir}$"):
      eval_runs.load_run(os.path.join(self.train_dir, "ckpt"))


class SavedPreprocessingTest(TrainedRunTest):
  """The run's own preprocessing, wherever its cache is (36 px frames)."""

  def copy_run(self, root: str) -> str:
    """A copy of the run whose training cache is root/cache."""
    shutil.copytree(self.cache_dir, os.path.join(root, "cache"))
    copy = os.path.join(root, "run")
    shutil.copytree(self.train_dir, copy)
    self.edit_config(copy, lambda c: c.update(cache_dir=os.path.join(root,
                                                                    "cache")))
    return copy

  def edit_config(self, train_dir: str, edit) -> None:
    path = os.path.join(train_dir, config_lib.CONFIG_FILE)
    with open(path) as f:
      values = json.load(f)
    edit(values)
    with open(path, "w") as f:
      json.dump(values, f)

  def test_moving_the_cache_away_keeps_the_predictions(self):
    root = self.tempdir()
    train_dir = self.copy_run(root)
    video = testdata.write_moving_square(os.path.join(root, "clip.mp4"),
                                         num_frames=8)
    # The shared run, loaded with its cache in place: the same weights.
    expected = classify.classify_video(self.model.classifier, video,
                                       self.model.preprocess, 32)

    shutil.move(os.path.join(root, "cache"), os.path.join(root, "moved"))
    after = eval_runs.load_run(train_dir)

    self.assertEqual(after.preprocess.short_side, 36)
    self.assertEqual(after.preprocess,
                     data_cache.read_cache(self.cache_dir).config)
    logits = classify.classify_video(after.classifier, video,
                                     after.preprocess, 32)
    np.testing.assert_allclose(logits["joint"], expected["joint"], rtol=1e-5)

  def test_a_cache_prepared_another_way_is_refused(self):
    config = dataclasses.replace(
        self.model.config, preprocess=dataclasses.replace(
            self.model.preprocess, short_side=48, flow_algorithm="tvl1"))
    with self.assertRaisesRegex(
        eval_runs.ModelError, f"{self.cache_dir}: prepared with short_side 36 "
        r"\(the run: 48\), flow_algorithm dis \(the run: tvl1\)"):
      evaluation.evaluate_model(self.model.classifier, config)

  def test_a_run_saved_without_preprocessing(self):
    root = self.tempdir()
    train_dir = self.copy_run(root)
    self.edit_config(train_dir, lambda c: c.pop("preprocess"))
    # Its cache still says how its videos were made: used, and said so.
    with self.assertLogs(level="WARNING") as logs:
      preprocess = eval_runs.run_preprocess_config(
          config_lib.load_config(train_dir), train_dir)
    self.assertIn("predates saved preprocessing settings", logs.output[0])
    self.assertEqual(preprocess, data_cache.read_cache(self.cache_dir).config)
    # Without the cache nothing says it: an error, not a guess.
    shutil.rmtree(os.path.join(root, "cache"))
    with self.assertRaisesRegex(
        eval_runs.ModelError, f"{train_dir}/config.json predates saved "
        "preprocessing settings and its training cache cannot be read"):
      eval_runs.load_run(train_dir)


class ClassifyVideoTest(TrainedRunTest):

  def setUp(self):
    super().setUp()
    self.video = testdata.write_moving_square(
        os.path.join(self.tempdir(), "long.mp4"), num_frames=45)
    self.preprocess = self.model.preprocess

  def test_streamed_frames_equal_the_whole_clip(self):
    clip = video_preprocess.load_clip(self.video, ("rgb", "flow"), self.preprocess, 32)
    frames = list(video_preprocess.iter_model_frames(self.video, ("rgb", "flow"),
                                        self.preprocess, 32))
    self.assertLen(frames, 45)
    for stream in ("rgb", "flow"):
      np.testing.assert_array_equal(np.stack([f[stream] for f in frames]),
                                    clip[stream])

  def test_timeline_windows_cover_the_video(self):
    entries = classify.classify_timeline(self.model.classifier, self.video,
                                        self.preprocess, 32, window_s=0.8,
                                        stride_s=0.4)
    # 45 frames at 25 fps: windows of 20 frames every 10, and one at the end.
    windows = classify.sliding_windows(45, 25.0, 0.8, 0.4)
    self.assertEqual(windows, [(0, 20), (10, 30), (20, 40), (25, 45)])
    self.assertEqual([(e["start"], e["end"]) for e in entries],
                     [(s / 25.0, e / 25.0) for s, e in windows])
    # Each window's entry is that window's frames classified as one clip.
    classifier = self.model.classifier
    frames = list(video_preprocess.iter_model_frames(
        self.video, classifier.streams, self.preprocess, 32))
    for (start, end), entry in zip(windows, entries):
      clips = {s: np.stack([f[s] for f in frames[start:end]])[None]
               for s in classifier.streams}
      probabilities = eval_metrics.softmax(
          classifier.logits(clips, any_length=True)["joint"][0])
      self.assertEqual(entry["label"], CLASSES[int(np.argmax(probabilities))])
      self.assertAlmostEqual(entry["probability"], probabilities.max(),
                             places=5)
    # The first window is the video's first 20 frames classified as a clip.
    first = classify.classify_video(
        self.model.classifier, self.video,
        video_preprocess.PreprocessConfig(**{**self.preprocess.to_dict(),
                                  "max_frames": 20}), 32)
    probabilities = eval_metrics.softmax(first["joint"])
    self.assertEqual(entries[0]["label"],
                     CLASSES[int(np.argmax(probabilities))])
    self.assertAlmostEqual(entries[0]["probability"], probabilities.max(),
                           places=5)
    text = classify.format_prediction(
        self.video, [{"label": "right", "probability": 0.912},
                     {"label": "left", "probability": 0.088}])
    self.assertEqual(text, f"{self.video}\n   91.2%  right\n    8.8%  left")


class EvaluateScriptTest(TrainedRunTest):

  def test_new_videos_multi_view_with_a_corrupt_video(self):
    data_dir = os.path.join(self.tempdir(), "new")
    for label, step in (("right", 3), ("left", -3)):
      os.makedirs(os.path.join(data_dir, label))
      for i in range(2):
        testdata.write_moving_square(
            os.path.join(data_dir, label, f"{i}.mp4"), step=step, seed=i)
    broken = testdata.write_not_a_video(os.path.join(data_dir, "left", "broken.mp4"))
    output_dir = os.path.join(self.tempdir(), "report")
    output_json = os.path.join(output_dir, "extra", "metrics.json")
    cache_dir = os.path.join(self.tempdir(), "cache")

    result = run_evaluate(
        f"--checkpoint_dir={self.train_dir}", f"--data_dir={data_dir}",
        f"--cache_dir={cache_dir}", "--eval_num_frames=4",
        "--eval_num_clips=2", "--eval_num_crops=3", f"--output_dir={output_dir}",
        f"--output_json={output_json}", "--prepare_workers=1")

    self.assertEqual(result.returncode, 1, result.stderr)
    self.assertIn("1 video(s) could not be evaluated:", result.stderr)
    self.assertIn(f"{broken}: cannot be opened as a video", result.stderr)
    self.assertNotIn("Traceback", result.stderr)
    self.assertIn("2 clips of 4 frames, 3 crops of 32 px", result.stdout)
    for section in ("=== rgb ===", "=== flow ===", "=== joint ==="):
      self.assertIn(section, result.stdout)
    with open(output_json) as f:
      metrics = json.load(f)
    self.assert_metrics_schema(metrics, 4)
    with open(os.path.join(output_dir, "metrics.json")) as f:
      self.assertEqual(json.load(f), metrics)
    with open(os.path.join(output_dir, "predictions.csv")) as f:
      rows = list(csv.DictReader(f))
    self.assertLen(rows, 4)
    self.assertEqual(sorted(os.path.relpath(r["path"], data_dir) for r in rows),
                     ["left/0.mp4", "left/1.mp4", "right/0.mp4", "right/1.mp4"])
    self.assertEqual(list(rows[0]), ["path", "label", "prediction",
                                     "prob_right", "prob_left"])
    png = cv2.imread(os.path.join(output_dir, "confusion_matrix.png"))
    self.assertGreater(png.shape[0], 100)
    self.assertGreater(png.std(), 10.0)

  def test_no_checkpoint_is_one_clear_line(self):
    empty = self.tempdir()
    result = run_evaluate(f"--checkpoint_dir={empty}")
    self.assertEqual(result.returncode, 2)
    self.assertIn(f"error: {empty}: no checkpoint in", result.stderr)
    self.assertNotIn("Traceback", result.stderr)


if __name__ == "__main__":
  absltest.main()
