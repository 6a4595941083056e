"""Tests for i3d.eval.metrics, i3d.eval.reports and the timelines of i3d.eval.classify."""

import csv
import json
import os

from absl.testing import absltest
from absl.testing import parameterized
import cv2
import numpy as np

from tests import testdata

from i3d.eval import classify
from i3d.eval import metrics as eval_metrics
from i3d.eval import reports as eval_reports
from i3d.video import io as video_io

CLASSES = ["squat", "push-up", "crunch"]
# Six videos with true classes [0, 0, 0, 1, 1, 2]; each row's largest logit is
# the prediction [0, 0, 1, 1, 2, 2] and its second largest is listed beside it.
LOGITS = np.array([
    [3.0, 1.0, 0.0],  # true squat, predicted squat.
    [2.0, 0.0, 1.0],  # true squat, predicted squat.
    [1.0, 2.0, 0.0],  # true squat, predicted push-up, squat second.
    [0.0, 2.0, 1.0],  # true push-up, predicted push-up.
    [0.0, 1.0, 2.0],  # true push-up, predicted crunch, push-up second.
    [1.0, 0.0, 2.0],  # true crunch, predicted crunch.
])
LABELS = np.array([0, 0, 0, 1, 1, 2])
# Rows true class, columns predicted class.
EXPECTED_CONFUSION = [[2, 1, 0], [0, 1, 1], [0, 0, 1]]


class _TempDirTestCase(parameterized.TestCase):
  """Gives each test a temporary directory, under absltest and pytest alike.

  absltest's create_tempdir needs parsed flags, which pytest does not parse.
  """

  def _tempdir(self) -> str:
    return self.create_tempdir().full_path


class ComputeMetricsTest(_TempDirTestCase):

  def test_confusion_matrix_and_accuracies(self):
    metrics = eval_metrics.compute_metrics(LOGITS, LABELS, CLASSES, top_k=2)
    self.assertEqual(metrics["confusion_matrix"], EXPECTED_CONFUSION)
    self.assertAlmostEqual(metrics["top1"], 4 / 6)
    # Both misclassified videos have their true class second.
    self.assertEqual(metrics["top_k"], {"k": 2, "accuracy": 1.0})
    # Recalls 2/3, 1/2 and 1/1.
    self.assertAlmostEqual(metrics["mean_class_accuracy"],
                           (2 / 3 + 1 / 2 + 1) / 3)
    self.assertEqual(metrics["num_videos"], 6)
    self.assertEqual(metrics["classes"], CLASSES)

  def test_per_class_precision_recall_f1_by_hand(self):
    per_class = eval_metrics.compute_metrics(LOGITS, LABELS, CLASSES)["per_class"]
    # squat: 2 of 2 squat predictions right, 2 of 3 squats found.
    # push-up: 1 of 2 push-up predictions right, 1 of 2 push-ups found.
    # crunch: 1 of 2 crunch predictions right, 1 of 1 crunch found.
    expected = {
        "squat": (1.0, 2 / 3, 0.8, 3),
        "push-up": (0.5, 0.5, 0.5, 2),
        "crunch": (0.5, 1.0, 2 / 3, 1),
    }
    for name, (precision, recall, f1, support) in expected.items():
      with self.subTest(name):
        self.assertAlmostEqual(per_class[name]["precision"], precision)
        self.assertAlmostEqual(per_class[name]["recall"], recall)
        self.assertAlmostEqual(per_class[name]["f1"], f1)
        self.assertEqual(per_class[name]["support"], support)

  def test_class_without_support_or_predictions_is_zero_not_nan(self):
    classes = CLASSES + ["pull-up"]
    logits = np.concatenate([LOGITS, np.full((6, 1), -5.0)], axis=1)
    metrics = eval_metrics.compute_metrics(logits, LABELS, classes)
    self.assertEqual(metrics["per_class"]["pull-up"],
                     {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0})
    # Absent classes do not lower the mean class accuracy.
    self.assertAlmostEqual(metrics["mean_class_accuracy"],
                           (2 / 3 + 1 / 2 + 1) / 3)

  def test_top_k_is_clipped_to_number_of_classes(self):
    metrics = eval_metrics.compute_metrics(LOGITS, LABELS, CLASSES, top_k=5)
    self.assertEqual(metrics["top_k"], {"k": 3, "accuracy": 1.0})

  def test_top1_accuracy_counts_only_first_choice(self):
    metrics = eval_metrics.compute_metrics(LOGITS, LABELS, CLASSES, top_k=1)
    self.assertEqual(metrics["top_k"]["accuracy"], metrics["top1"])

  def test_ties_go_to_lower_class_index(self):
    metrics = eval_metrics.compute_metrics(
        np.zeros((2, 3)), np.array([0, 1]), CLASSES, top_k=1)
    self.assertEqual(metrics["confusion_matrix"],
                     [[1, 0, 0], [1, 0, 0], [0, 0, 0]])

  def test_json_schema_round_trips(self):
    metrics = eval_metrics.compute_metrics(LOGITS, LABELS, CLASSES)
    self.assertEqual(
        set(metrics), {"top1", "top_k", "mean_class_accuracy", "per_class",
                       "confusion_matrix", "classes", "num_videos"})
    self.assertIsInstance(metrics["top1"], float)
    self.assertIsInstance(metrics["top_k"]["k"], int)
    self.assertIsInstance(metrics["top_k"]["accuracy"], float)
    self.assertIsInstance(metrics["mean_class_accuracy"], float)
    self.assertIsInstance(metrics["num_videos"], int)
    for scores in metrics["per_class"].values():
      self.assertEqual(set(scores), {"precision", "recall", "f1", "support"})
      self.assertIsInstance(scores["support"], int)
    self.assertTrue(all(isinstance(count, int)
                        for row in metrics["confusion_matrix"]
                        for count in row))

    path = os.path.join(self._tempdir(), "metrics.json")
    eval_reports.write_metrics_json(path, metrics)
    with open(path, encoding="utf-8") as f:
      self.assertEqual(json.load(f), metrics)

  @parameterized.named_parameters(
      ("logits_not_2d", LOGITS[0], LABELS[:1], "shape"),
      ("no_videos", np.zeros((0, 3)), np.zeros((0,), int), "no videos"),
      ("class_count_mismatch", LOGITS[:, :2], LABELS, "class list"),
      ("label_count_mismatch", LOGITS, LABELS[:5],
       r"labels must have shape \[6\]"),
      ("label_out_of_range", LOGITS, np.array([0, 0, 0, 1, 1, 3]),
       "out of range"),
      ("negative_label", LOGITS, np.array([0, 0, 0, 1, 1, -1]), "out of range"),
      ("float_labels", LOGITS, LABELS.astype(float), "integer"),
      ("nan_logits", np.where(LOGITS == 3.0, np.nan, LOGITS), LABELS, "NaN"),
  )
  def test_bad_inputs_raise(self, logits, labels, message):
    with self.assertRaisesRegex(ValueError, message):
      eval_metrics.compute_metrics(logits, labels, CLASSES)

  def test_bad_top_k_raises(self):
    with self.assertRaisesRegex(ValueError, "top_k"):
      eval_metrics.compute_metrics(LOGITS, LABELS, CLASSES, top_k=0)

  def test_duplicate_classes_raise(self):
    with self.assertRaisesRegex(ValueError, "duplicate"):
      eval_metrics.compute_metrics(LOGITS, LABELS, ["a", "a", "b"])


class StreamsTest(_TempDirTestCase):

  def test_joint_is_metrics_of_summed_logits(self):
    # Each stream alone gets video 0 wrong; their sum gets it right.
    rgb = np.array([[1.0, 2.0, 0.0], [0.0, 3.0, 0.0]])
    flow = np.array([[2.0, 0.0, 2.5], [0.0, 1.0, 0.0]])
    labels = np.array([0, 1])
    metrics = eval_metrics.evaluate_streams({"rgb": rgb, "flow": flow}, labels,
                                          CLASSES, top_k=1)
    self.assertEqual(list(metrics["streams"]), ["rgb", "flow", "joint"])
    self.assertEqual(metrics["streams"]["rgb"]["top1"], 0.5)
    self.assertEqual(metrics["streams"]["flow"]["top1"], 0.5)
    joint = eval_metrics.compute_metrics(rgb + flow, labels, CLASSES, top_k=1)
    self.assertEqual(metrics["streams"]["joint"], joint)
    self.assertEqual(metrics["top1"], 1.0)
    headline = {k: v for k, v in metrics.items() if k != "streams"}
    self.assertEqual(headline, joint)
    np.testing.assert_allclose(
        eval_metrics.fuse_streams({"rgb": rgb, "flow": flow}), rgb + flow)

  def test_single_stream_is_the_headline(self):
    metrics = eval_metrics.evaluate_streams({"rgb": LOGITS}, LABELS, CLASSES)
    self.assertEqual(list(metrics["streams"]), ["rgb"])
    self.assertEqual(metrics["top1"], metrics["streams"]["rgb"]["top1"])
    json.dumps(metrics)

  def test_bad_streams_raise(self):
    with self.assertRaisesRegex(ValueError, "no stream"):
      eval_metrics.evaluate_streams({}, LABELS, CLASSES)
    with self.assertRaisesRegex(ValueError, "different shapes"):
      eval_metrics.evaluate_streams({"rgb": LOGITS, "flow": LOGITS[:5]}, LABELS,
                                  CLASSES)
    with self.assertRaisesRegex(ValueError, "reserved"):
      eval_metrics.evaluate_streams({"joint": LOGITS}, LABELS, CLASSES)


class ViewsAndSoftmaxTest(absltest.TestCase):

  def test_average_views_of_one_video(self):
    views = np.array([[1.0, 3.0], [3.0, 1.0], [2.0, 5.0]])
    np.testing.assert_allclose(eval_metrics.average_views(views), [2.0, 3.0])

  def test_average_views_of_a_batch(self):
    views = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4)
    averaged = eval_metrics.average_views(views)
    self.assertEqual(averaged.shape, (2, 4))
    np.testing.assert_allclose(averaged, views.mean(axis=1))

  def test_average_views_bad_shapes_raise(self):
    with self.assertRaisesRegex(ValueError, "shape"):
      eval_metrics.average_views(np.zeros(4))
    with self.assertRaisesRegex(ValueError, "no views"):
      eval_metrics.average_views(np.zeros((2, 0, 4)))

  def test_softmax_is_stable_and_normalised(self):
    probabilities = eval_metrics.softmax(np.array([[1000.0, 1000.0, -1000.0],
                                                 [0.0, np.log(3.0), 0.0]]))
    np.testing.assert_allclose(probabilities,
                               [[0.5, 0.5, 0.0], [0.2, 0.6, 0.2]], atol=1e-12)


class ReportTest(absltest.TestCase):

  def test_report_has_all_sections(self):
    report = eval_reports.format_report(
        eval_metrics.compute_metrics(LOGITS, LABELS, CLASSES, top_k=2))
    for text in ("Top-1 accuracy:", "66.67%", "Top-2 accuracy:", "100.00%",
                 "Mean class accuracy:", "72.22%", "Precision", "Support",
                 "Confusion matrix"):
      self.assertIn(text, report)
    # The confusion matrix rows carry index, name and counts.
    self.assertRegex(report, r"0 squat\s+2\s+1\s+0\n")
    self.assertRegex(report, r"2 crunch\s+0\s+0\s+1\n")

  def test_report_of_streams_has_one_section_each(self):
    metrics = eval_metrics.evaluate_streams({"rgb": LOGITS, "flow": LOGITS},
                                          LABELS, CLASSES)
    report = eval_reports.format_report(metrics)
    for name in ("rgb", "flow", "joint"):
      self.assertIn(f"=== {name} ===", report)


class ConfusionMatrixPngTest(_TempDirTestCase):

  def test_png_decodes_and_is_not_uniform(self):
    path = os.path.join(self._tempdir(), "confusion.png")
    eval_reports.write_confusion_matrix_png(EXPECTED_CONFUSION, CLASSES, path)
    image = cv2.imread(path)
    self.assertIsNotNone(image)
    self.assertGreater(image.shape[0], 100)
    self.assertGreater(image.shape[1], 100)
    self.assertGreater(image.std(), 10)
    # Black text (names, counts) and white background are both present.
    self.assertEqual(image.min(), 0)
    self.assertEqual(image.max(), 255)
    self.assertEqual(os.listdir(os.path.dirname(path)), ["confusion.png"])

  def test_shading_follows_the_matrix(self):
    diagonal = eval_reports.render_confusion_matrix(np.eye(3, dtype=int) * 5,
                                                  CLASSES)
    off_diagonal = eval_reports.render_confusion_matrix(
        np.roll(np.eye(3, dtype=int) * 5, 1, axis=1), CLASSES)
    self.assertEqual(diagonal.shape, off_diagonal.shape)
    self.assertFalse(np.array_equal(diagonal, off_diagonal))

  def test_many_classes_and_empty_rows_render(self):
    classes = [f"class_{i}" for i in range(50)]
    matrix = np.zeros((50, 50), dtype=int)
    matrix[0, 0] = 7
    image = eval_reports.render_confusion_matrix(matrix, classes)
    self.assertEqual(image.dtype, np.uint8)
    self.assertLess(max(image.shape[:2]), 2000)

  def test_bad_matrix_raises(self):
    path = os.path.join(self._tempdir(), "confusion.png")
    with self.assertRaisesRegex(ValueError, "shape"):
      eval_reports.write_confusion_matrix_png(np.zeros((2, 3)), CLASSES, path)
    with self.assertRaisesRegex(ValueError, "counts"):
      eval_reports.write_confusion_matrix_png(-np.eye(3), CLASSES, path)
    self.assertFalse(os.path.exists(path))


class PredictionsCsvTest(_TempDirTestCase):

  def _read(self, path):
    with open(path, newline="", encoding="utf-8") as f:
      return list(csv.DictReader(f))

  def test_rows_have_labels_predictions_and_probabilities(self):
    path = os.path.join(self._tempdir(), "predictions.csv")
    paths = [f"videos/clip,{i}.mp4" for i in range(6)]
    labels = [CLASSES[i] for i in LABELS]
    eval_reports.write_predictions_csv(path, paths, labels, LOGITS, CLASSES)
    rows = self._read(path)
    self.assertLen(rows, 6)
    self.assertEqual(list(rows[0]), ["path", "label", "prediction",
                                     "prob_squat", "prob_push-up",
                                     "prob_crunch"])
    self.assertEqual([row["path"] for row in rows], paths)
    self.assertEqual([row["label"] for row in rows], labels)
    self.assertEqual([row["prediction"] for row in rows],
                     ["squat", "squat", "push-up", "push-up", "crunch",
                      "crunch"])
    probabilities = np.array([[float(row[f"prob_{name}"]) for name in CLASSES]
                              for row in rows])
    np.testing.assert_allclose(probabilities, eval_metrics.softmax(LOGITS),
                               atol=1e-6)

  def test_unlabelled_videos_have_empty_label(self):
    path = os.path.join(self._tempdir(), "predictions.csv")
    eval_reports.write_predictions_csv(path, ["a.mp4"], None, LOGITS[:1], CLASSES)
    self.assertEqual(self._read(path)[0]["label"], "")

  def test_bad_inputs_raise(self):
    path = os.path.join(self._tempdir(), "predictions.csv")
    with self.assertRaisesRegex(ValueError, "2 video paths"):
      eval_reports.write_predictions_csv(path, ["a", "b"], None, LOGITS, CLASSES)
    with self.assertRaisesRegex(ValueError, "not in the class list"):
      eval_reports.write_predictions_csv(path, ["a"], ["lunge"], LOGITS[:1],
                                       CLASSES)
    with self.assertRaisesRegex(ValueError, "1 labels"):
      eval_reports.write_predictions_csv(path, ["a", "b"], ["squat"], LOGITS[:2],
                                       CLASSES)
    self.assertFalse(os.path.exists(path))


class SlidingWindowsTest(parameterized.TestCase):

  @parameterized.parameters(
      (1, 25.0, 2.0, 1.0),
      (49, 25.0, 2.0, 1.0),
      (50, 25.0, 2.0, 1.0),
      (51, 25.0, 2.0, 1.0),
      (300, 30.0, 2.0, 0.5),
      (301, 29.97, 3.2, 1.1),
      (1000, 24.0, 1.0, 1.0),
      (97, 10.0, 0.95, 0.3),
  )
  def test_windows_cover_the_video(self, num_frames, fps, window_s, stride_s):
    windows = classify.sliding_windows(num_frames, fps, window_s, stride_s)
    covered = np.zeros(num_frames, dtype=bool)
    for start, end in windows:
      self.assertGreaterEqual(start, 0)
      self.assertLessEqual(end, num_frames)
      self.assertLess(start, end)
      covered[start:end] = True
    self.assertTrue(covered.all())
    self.assertEqual(windows[0][0], 0)
    self.assertEqual(windows[-1][1], num_frames)
    self.assertLen({end - start for start, end in windows}, 1)
    starts = [start for start, _ in windows]
    self.assertEqual(starts, sorted(set(starts)))

  def test_exact_windows(self):
    self.assertEqual(classify.sliding_windows(10, 1.0, 4.0, 2.0),
                     [(0, 4), (2, 6), (4, 8), (6, 10)])
    # The last window is aligned to the end.
    self.assertEqual(classify.sliding_windows(11, 1.0, 4.0, 2.0),
                     [(0, 4), (2, 6), (4, 8), (6, 10), (7, 11)])

  def test_short_video_gives_one_window(self):
    self.assertEqual(classify.sliding_windows(30, 25.0, 2.0, 1.0), [(0, 30)])

  @parameterized.named_parameters(
      ("no_frames", 0, 25.0, 2.0, 1.0, "num_frames"),
      ("zero_fps", 10, 0.0, 2.0, 1.0, "positive"),
      ("negative_window", 10, 25.0, -2.0, 1.0, "positive"),
      ("zero_stride", 10, 25.0, 2.0, 0.0, "positive"),
      ("stride_longer_than_window", 100, 25.0, 1.0, 2.0,
       "longer than the window"),
  )
  def test_bad_arguments_raise(self, num_frames, fps, window_s, stride_s,
                               message):
    with self.assertRaisesRegex(ValueError, message):
      classify.sliding_windows(num_frames, fps, window_s, stride_s)


class TimelineTest(absltest.TestCase):

  def test_entries_in_seconds(self):
    windows = [(0, 50), (25, 75)]
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    entries = classify.timeline(windows, probabilities, CLASSES, fps=25.0)
    self.assertEqual(entries, [
        {"start": 0.0, "end": 2.0, "label": "squat", "probability": 0.7},
        {"start": 1.0, "end": 3.0, "label": "crunch", "probability": 0.6},
    ])
    json.dumps(entries)

  def test_bad_inputs_raise(self):
    windows = [(0, 50), (25, 75)]
    with self.assertRaisesRegex(ValueError, "softmax"):
      classify.timeline(windows, LOGITS[:2], CLASSES, fps=25.0)
    with self.assertRaisesRegex(ValueError, "shape"):
      classify.timeline(windows, np.full((3, 3), 1 / 3), CLASSES, fps=25.0)
    with self.assertRaisesRegex(ValueError, "no windows"):
      classify.timeline([], np.zeros((0, 3)), CLASSES, fps=25.0)
    with self.assertRaisesRegex(ValueError, "fps"):
      classify.timeline(windows, np.full((2, 3), 1 / 3), CLASSES, fps=0.0)


class AnnotatedVideoTest(_TempDirTestCase):

  def setUp(self):
    super().setUp()
    self.directory = self._tempdir()
    self.fps = 10.0
    # Frames 0-19 are covered by the timeline; 20-24 are not.
    self.frames = np.full((25, 96, 128, 3), (40, 200, 40), dtype=np.uint8)
    self.entries = [
        {"start": 0.0, "end": 1.0, "label": "squat", "probability": 0.9},
        {"start": 1.0, "end": 2.0, "label": "crunch", "probability": 0.55},
    ]

  def _read_frames(self, path):
    frames, _ = video_io.read_bgr_frames(path)
    return np.array(list(frames))

  def test_frames_are_annotated_and_counted(self):
    out_path = os.path.join(self.directory, "annotated.mp4")
    written = eval_reports.write_annotated_video(self.frames, self.entries,
                                               out_path, fps=self.fps)
    self.assertEqual(written, 25)
    self.assertEqual(os.listdir(self.directory), ["annotated.mp4"])
    decoded = self._read_frames(out_path)
    self.assertEqual(decoded.shape, (25, 96, 128, 3))
    banner = slice(0, 96 // 10)
    # The banner darkens labelled frames; unlabelled frames keep the scene.
    self.assertLess(decoded[5, banner].mean(), 0.6 * decoded[5, 50:].mean())
    self.assertGreater(decoded[22, banner].mean(),
                       0.9 * decoded[22, 50:].mean())
    # Different labels draw different text.
    self.assertGreater(
        np.abs(decoded[5, banner].astype(int) -
               decoded[15, banner].astype(int)).max(), 100)

  def test_video_file_input_keeps_frame_count_and_rate(self):
    source = os.path.join(self.directory, "source.mp4")
    eval_reports.write_annotated_video(self.frames, self.entries, source,
                                     fps=self.fps)
    out_path = os.path.join(self.directory, "again.mp4")
    self.assertEqual(
        eval_reports.write_annotated_video(source, self.entries, out_path), 25)
    self.assertEqual(testdata.count_frames(out_path), 25)
    capture = cv2.VideoCapture(out_path)
    self.assertAlmostEqual(capture.get(cv2.CAP_PROP_FPS), self.fps, places=3)
    capture.release()

  def test_video_whose_container_declares_a_time_base_as_rate(self):
    # shared/cases: a browser WebM, 90 frames over 3 s that OpenCV reports
    # at 1000 fps. Its copy is 3 s long at 25 fps, labelled by time.
    source = os.path.join(testdata.CASES, "browser_recording.webm")
    out_path = os.path.join(self.directory, "annotated.mp4")
    written = eval_reports.write_annotated_video(source, self.entries, out_path)
    self.assertBetween(written, 74, 76)
    capture = cv2.VideoCapture(out_path)
    self.assertAlmostEqual(capture.get(cv2.CAP_PROP_FPS), 25.0, places=3)
    capture.release()
    decoded = self._read_frames(out_path)
    banner = slice(0, 240 // 10)
    # Labelled for the timeline's 2 s (50 frames), unlabelled after.
    self.assertLess(decoded[45, banner].mean(), 0.6 * decoded[45, 100:].mean())
    self.assertGreater(decoded[55, banner].mean(),
                       0.8 * decoded[55, 100:].mean())

  def test_bad_inputs_raise(self):
    out_path = os.path.join(self.directory, "annotated.mp4")
    with self.assertRaisesRegex(ValueError, "uint8"):
      eval_reports.write_annotated_video(self.frames.astype(np.float32),
                                       self.entries, out_path, fps=self.fps)
    with self.assertRaisesRegex(ValueError, "frame rate"):
      eval_reports.write_annotated_video(self.frames, self.entries, out_path)
    with self.assertRaisesRegex(ValueError, "timeline is empty"):
      eval_reports.write_annotated_video(self.frames, [], out_path, fps=self.fps)
    with self.assertRaisesRegex(ValueError, "lacks"):
      eval_reports.write_annotated_video(self.frames, [{"start": 0.0}], out_path,
                                       fps=self.fps)
    with self.assertRaisesRegex(ValueError, "extension"):
      eval_reports.write_annotated_video(
          self.frames, self.entries, os.path.join(self.directory, "out"),
          fps=self.fps)
    with self.assertRaisesRegex(ValueError, "not found"):
      eval_reports.write_annotated_video(
          os.path.join(self.directory, "missing.mp4"), self.entries, out_path)
    with self.assertRaisesRegex(ValueError, "no frames"):
      eval_reports.write_annotated_video(self.frames[:0], self.entries, out_path,
                                       fps=self.fps)
    self.assertEqual(os.listdir(self.directory), [])


if __name__ == "__main__":
  absltest.main()
