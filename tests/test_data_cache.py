"""Tests of i3d.data: discovery, preparation, resumption, splits, tf.data."""

import csv
import fcntl
import glob
import json
import os
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import cv2
import numpy as np
import tensorflow as tf

from i3d.data import cache as data_cache
from i3d.data import pipeline as data_pipeline
from i3d.data import sources as data_sources
from i3d.data import splits as data_splits
from i3d import fileio
from i3d import labels
from i3d import streams as streams_lib
from i3d.video import preprocess as video_preprocess
from tests import testdata

CLASSES = ("squat_correct", "crunch_correct")
SMALL = video_preprocess.PreprocessConfig(short_side=48, flow_algorithm="dis")


def write_clip(path: str, num_frames: int, seed: int = 0) -> str:
  """Writes a 25 fps 64x48 panning clip (so frames are kept one for one)."""
  return testdata.write_clip(path, testdata.panning_frames(num_frames,
                                                           seed=seed))


def write_manifest(path: str, rows: list[dict[str, str]]) -> str:
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return path


def records(cache_dir: str) -> list[str]:
  return sorted(glob.glob(os.path.join(cache_dir, "videos", "*.json")))


class DiscoveryTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.create_tempdir().full_path

  def test_data_dir_lists_videos_per_class(self):
    write_clip(os.path.join(self.root, "squat_correct", "a.mp4"), 3)
    write_clip(os.path.join(self.root, "squat_correct", "alice", "b.MOV"), 3)
    write_clip(os.path.join(self.root, "crunch_correct", "c.mp4"), 3)
    with open(os.path.join(self.root, "crunch_correct", "notes.txt"), "w") as f:
      f.write("not a video")
    os.makedirs(os.path.join(self.root, ".thumbnails"))
    found = data_sources.discover_videos(data_dir=self.root, classes=CLASSES)
    self.assertEqual([(s.relpath, s.label) for s in found.sources],
                     [("crunch_correct/c.mp4", "crunch_correct"),
                      ("squat_correct/a.mp4", "squat_correct"),
                      ("squat_correct/alice/b.MOV", "squat_correct")])
    self.assertEqual(found.classes, CLASSES)

  def test_unknown_class_folder_is_an_error_naming_it(self):
    write_clip(os.path.join(self.root, "jumping_jacks", "a.mp4"), 3)
    with self.assertRaisesRegex(data_sources.DatasetError,
                                r"jumping_jacks: folder name .* not a class"):
      data_sources.discover_videos(data_dir=self.root, classes=CLASSES)

  def test_manifest_paths_subjects_and_splits(self):
    write_clip(os.path.join(self.root, "clips", "a.mp4"), 3)
    write_clip(os.path.join(self.root, "clips", "b.mp4"), 3)
    manifest = write_manifest(os.path.join(self.root, "videos.csv"), [
        {"path": "clips/a.mp4", "label": "squat_correct", "subject": "ann",
         "split": "train"},
        {"path": os.path.join(self.root, "clips", "b.mp4"),
         "label": "crunch_correct", "subject": "bob", "split": "eval"},
    ])
    found = data_sources.discover_videos(manifest=manifest, classes=CLASSES)
    self.assertEqual(
        [(s.relpath, s.label, s.subject, s.split) for s in found.sources],
        [("clips/a.mp4", "squat_correct", "ann", "train"),
         ("clips/b.mp4", "crunch_correct", "bob", "eval")])
    self.assertEqual(found.root, self.root)

  def test_manifest_errors_name_the_file_and_line(self):
    write_clip(os.path.join(self.root, "a.mp4"), 3)
    cases = {
        "unknown label 'jumping' for a.mp4":
            [{"path": "a.mp4", "label": "jumping"}],
        "listed twice":
            [{"path": "a.mp4", "label": "squat_correct"},
             {"path": "./a.mp4", "label": "squat_correct"}],
        "split must be one of":
            [{"path": "a.mp4", "label": "squat_correct", "split": "test"}],
        "expected a header line":
            [{"file": "a.mp4", "label": "squat_correct"}],
    }
    for message, rows in cases.items():
      with self.subTest(message=message):
        manifest = write_manifest(os.path.join(self.root, "m.csv"), rows)
        with self.assertRaisesRegex(data_sources.DatasetError, message) as raised:
          data_sources.discover_videos(manifest=manifest, classes=CLASSES)
        self.assertIn(manifest, str(raised.exception))

  def test_manifest_saved_by_excel(self):
    # shared/cases: UTF-8 with a byte-order mark, CRLF line ends, names with
    # an accent, spaces and a quoted comma.
    manifest = os.path.join(testdata.CASES, "manifest_excel", "manifest.csv")
    found = data_sources.discover_videos(manifest=manifest)
    self.assertEqual(
        [(s.relpath, s.label, s.subject) for s in found.sources],
        [("clips/Jos\u00e9 squat 01.mp4", "squat_correct", "jose"),
         ("clips/b\u00f8b, pull-up.mp4", "pull-up_correct", "bob")])
    self.assertEmpty(found.failures)
    report = data_cache.prepare_dataset(
        os.path.join(self.root, "cache"), manifest=manifest, config=SMALL,
        eval_fraction=0.0)
    self.assertTrue(report.ok, report.summary())
    self.assertEqual(report.num_prepared, 2)

  def test_manifest_as_other_tools_save_it(self):
    write_clip(os.path.join(self.root, "clips", "Jos\u00e9.mp4"), 3)
    write_clip(os.path.join(self.root, "clips", "b.mp4"), 3, seed=1)
    text = ("Path ; Label;Subject\r\n"
            "clips\\Jos\u00e9.mp4;squat_correct;ann\r\n"  # Windows separator.
            "clips/Jose\u0301.mp4;crunch_correct;ann\r\n"   # Decomposed (NFD).
            ";;\r\n")  # The empty rows a spreadsheet leaves.
    expected = [("clips/Jos\u00e9.mp4", "squat_correct")]
    for encoding in ("utf-8-sig", "utf-16", "cp1252"):
      with self.subTest(encoding=encoding):
        manifest = os.path.join(self.root, f"{encoding}.csv")
        with open(manifest, "wb") as f:
          f.write(text.replace("clips/Jose\u0301.mp4", "clips/b.mp4").encode(
              encoding))
        found = data_sources.discover_videos(manifest=manifest, classes=CLASSES)
        self.assertEqual([(s.relpath, s.label) for s in found.sources],
                         expected + [("clips/b.mp4", "crunch_correct")])
    # The same file named twice (composed and decomposed accents).
    manifest = os.path.join(self.root, "nfd.csv")
    with open(manifest, "w", encoding="utf-8", newline="") as f:
      f.write(text)
    with self.assertRaisesRegex(data_sources.DatasetError,
                                f"{manifest}:3: .* listed twice"):
      data_sources.discover_videos(manifest=manifest, classes=CLASSES)

  def test_manifest_paths_outside_its_folder(self):
    videos = self.create_tempdir().full_path
    absolute = write_clip(os.path.join(videos, "a.mp4"), 3)
    write_clip(os.path.join(videos, "b.mp4"), 3, seed=1)
    manifests = os.path.join(self.root, "lists")
    os.makedirs(manifests)
    manifest = write_manifest(os.path.join(manifests, "m.csv"), [
        {"path": absolute, "label": "squat_correct"},
        {"path": os.path.relpath(os.path.join(videos, "b.mp4"), manifests),
         "label": "crunch_correct"},
        {"path": "../gone.mp4", "label": "crunch_correct"},
    ])
    found = data_sources.discover_videos(manifest=manifest, classes=CLASSES)
    self.assertEqual([(s.path, s.relpath) for s in found.sources],
                     [(absolute, absolute),
                      (os.path.join(videos, "b.mp4"),
                       os.path.join(videos, "b.mp4"))])
    self.assertEqual([(f.path, f.reason) for f in found.failures],
                     [(os.path.join(self.root, "gone.mp4"),
                       f"listed on {manifest}:4 but not found")])

  def test_class_file_saved_by_a_windows_editor(self):
    path = os.path.join(self.root, "classes.txt")
    with open(path, "wb") as f:
      f.write("\ufeffsquat_correct\r\ncrunch_correct\r\n".encode("utf-8"))
    self.assertEqual(labels.resolve_classes(path), list(CLASSES))

  def test_manifest_not_text_is_one_line(self):
    manifest = os.path.join(self.root, "m.csv")
    with open(manifest, "wb") as f:
      f.write(b"path,label\n\x81\x8d\x8f.mp4,squat_correct\n")
    with self.assertRaisesRegex(data_sources.DatasetError,
                                f"^{manifest}: not UTF-8 text .*$"):
      data_sources.discover_videos(manifest=manifest, classes=CLASSES)

  def test_exactly_one_source(self):
    with self.assertRaisesRegex(data_sources.DatasetError, "exactly one"):
      data_sources.discover_videos()


class SplitTest(parameterized.TestCase):

  def sources(self, num_subjects: int, per_class: int,
              with_subjects: bool = True) -> list[data_sources.VideoSource]:
    return [
        data_sources.VideoSource(
            path=f"/d/{label}/{s}_{i}.mp4", relpath=f"{label}/{s}_{i}.mp4",
            label=label, subject=f"s{s}" if with_subjects else None)
        for label in CLASSES for s in range(num_subjects)
        for i in range(per_class)
    ]

  @parameterized.parameters(0, 1, 2, 3)
  def test_subject_split_keeps_each_person_on_one_side(self, seed):
    sources = self.sources(num_subjects=10, per_class=2)
    splits = data_splits.split_videos(sources, eval_fraction=0.2, seed=seed)
    subject_of = {s.relpath: s.subject for s in sources}
    train = {subject_of[p] for p in splits["train"]}
    evaluation = {subject_of[p] for p in splits["eval"]}
    self.assertEqual(splits["method"], "subject")
    self.assertEmpty(train & evaluation)
    self.assertLen(evaluation, 2)  # 8 of 40 videos: two subjects of four.
    self.assertCountEqual(splits["train"] + splits["eval"],
                          [s.relpath for s in sources])

  def test_split_is_deterministic_and_depends_on_the_seed(self):
    sources = self.sources(num_subjects=10, per_class=2)
    first = data_splits.split_videos(sources, 0.2, seed=0)
    self.assertEqual(first,
                     data_splits.split_videos(list(reversed(sources)), 0.2, 0))
    others = [data_splits.split_videos(sources, 0.2, seed)["eval"]
              for seed in range(1, 5)]
    self.assertTrue(any(other != first["eval"] for other in others))

  def test_videos_without_subject_are_their_own_group(self):
    sources = self.sources(num_subjects=3, per_class=2)
    sources += [data_sources.VideoSource("/d/x.mp4", "x.mp4", CLASSES[0])]
    splits = data_splits.split_videos(sources, 0.5, seed=0)
    self.assertEqual(splits["method"], "subject")
    self.assertCountEqual(splits["train"] + splits["eval"],
                          [s.relpath for s in sources])

  def test_stratified_without_subjects(self):
    sources = self.sources(num_subjects=5, per_class=1, with_subjects=False)
    splits = data_splits.split_videos(sources, 0.2, seed=0)
    self.assertEqual(splits["method"], "stratified")
    for label in CLASSES:
      self.assertLen([p for p in splits["eval"] if p.startswith(label)], 1)
      self.assertLen([p for p in splits["train"] if p.startswith(label)], 4)

  def test_manifest_split_overrides(self):
    sources = [
        data_sources.VideoSource("/d/a.mp4", "a.mp4", CLASSES[0], "ann", "eval"),
        data_sources.VideoSource("/d/b.mp4", "b.mp4", CLASSES[0], "ann", "train"),
    ]
    splits = data_splits.split_videos(sources, 0.5, seed=0)
    self.assertEqual((splits["method"], splits["train"], splits["eval"]),
                     ("manifest", ["b.mp4"], ["a.mp4"]))

  def test_eval_fraction_bounds(self):
    sources = self.sources(num_subjects=2, per_class=1)
    self.assertEmpty(data_splits.split_videos(sources, 0.0, seed=0)["eval"])
    with self.assertRaises(data_sources.DatasetError):
      data_splits.split_videos(sources, 1.0, seed=0)


class PrepareTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.create_tempdir().full_path
    self.cache = os.path.join(self.create_tempdir().full_path, "cache")

  def write_good_videos(self, count: int = 3) -> None:
    for i in range(count):
      write_clip(os.path.join(self.root, CLASSES[i % 2], f"v{i}.mp4"), 8 + i,
                 seed=i)

  def prepare(self, **kwargs) -> data_cache.PrepareReport:
    arguments = dict(cache_dir=self.cache, data_dir=self.root, classes=CLASSES,
                     config=SMALL, eval_fraction=0.0)
    return data_cache.prepare_dataset(**{**arguments, **kwargs})

  def test_bad_inputs_are_reported_and_the_others_prepared(self):
    good = write_clip(os.path.join(self.root, "good.mp4"), 8)
    write_clip(os.path.join(self.root, "good2.mp4"), 9, seed=1)
    with open(os.path.join(self.root, "text.mp4"), "w") as f:
      f.write("hello" * 100)
    open(os.path.join(self.root, "empty.mp4"), "wb").close()
    with open(good, "rb") as f:
      data = f.read()
    with open(os.path.join(self.root, "cut.mp4"), "wb") as f:
      f.write(data[:len(data) // 2])  # An interrupted copy.
    write_clip(os.path.join(self.root, "one.mp4"), 1)
    outside = self.create_tempdir().full_path
    write_clip(os.path.join(outside, "elsewhere.mp4"), 8, seed=2)
    names = ["good", "good2", "text", "empty", "cut", "one", "missing"]
    rows = [{"path": f"{n}.mp4", "label": CLASSES[0]} for n in names]
    elsewhere = os.path.join(outside, "elsewhere.mp4")
    rows.append({"path": os.path.relpath(elsewhere, self.root),
                 "label": CLASSES[0]})
    manifest = write_manifest(os.path.join(self.root, "m.csv"), rows)

    report = self.prepare(data_dir=None, manifest=manifest)

    reasons = {os.path.basename(f.path): f.reason for f in report.failures}
    self.assertCountEqual(reasons, ["text.mp4", "empty.mp4", "cut.mp4",
                                    "one.mp4", "missing.mp4"])
    self.assertIn("cannot be opened as a video", reasons["text.mp4"])
    self.assertIn("empty file", reasons["empty.mp4"])
    self.assertIn("truncated", reasons["cut.mp4"])
    self.assertIn("too short for optical flow", reasons["one.mp4"])
    self.assertIn("not found", reasons["missing.mp4"])
    self.assertFalse(report.ok)
    self.assertEqual((report.num_videos, report.num_prepared), (8, 3))
    for failure in report.failures:
      self.assertIn(f"{failure.path}: {failure.reason}", report.summary())
    info = data_cache.read_cache(self.cache)
    # A video outside the manifest's folder (`..`) is known by its full path.
    self.assertEqual([e.path for e in info.entries],
                     sorted([elsewhere, "good.mp4", "good2.mp4"]))
    self.assertLen(info.failures, 5)
    self.assertLen(records(self.cache), 3)

  def test_interrupted_preparation_resumes_without_partial_entries(self):
    self.write_good_videos(3)
    write_bytes = fileio.write_bytes
    calls = []

    def crash_on_fourth_write(path, data):
      calls.append(path)
      if len(calls) == 4:  # The second video's flow file.
        raise KeyboardInterrupt
      write_bytes(path, data)

    with mock.patch.object(fileio, "write_bytes",
                           crash_on_fourth_write):
      with self.assertRaises(KeyboardInterrupt):
        self.prepare()
    # One complete entry; the second video's RGB file is there but without its
    # record it is not an entry; no metadata claims anything.
    self.assertLen(records(self.cache), 1)
    self.assertTrue(os.path.exists(calls[2]))
    self.assertFalse(os.path.exists(calls[3]))
    self.assertFalse(os.path.exists(os.path.join(self.cache, "metadata.json")))

    report = self.prepare()
    self.assertEqual((report.num_cached, report.num_prepared), (1, 2))
    self.assertTrue(report.ok)
    self.assertLen(records(self.cache), 3)
    self.assertLen(glob.glob(os.path.join(self.cache, "videos", "*.pb")), 6)
    self.assertEmpty(glob.glob(os.path.join(self.cache, "**", ".*.tmp"),
                               recursive=True))
    again = self.prepare()
    self.assertEqual((again.num_cached, again.num_prepared), (3, 0))

  def test_key_follows_content_and_settings(self):
    self.write_good_videos(2)
    self.prepare()
    os.rename(os.path.join(self.root, CLASSES[0], "v0.mp4"),
              os.path.join(self.root, CLASSES[0], "renamed.mp4"))
    report = self.prepare()
    self.assertEqual((report.num_cached, report.num_prepared), (2, 0))
    report = self.prepare(config=video_preprocess.PreprocessConfig(
        short_side=32, flow_algorithm="dis"))
    self.assertEqual((report.num_cached, report.num_prepared), (0, 2))
    self.assertEqual(data_cache.read_cache(self.cache).entries[0].height, 32)

  def test_adding_a_stream_computes_only_that_stream(self):
    self.write_good_videos(2)
    self.prepare(streams=("rgb",))
    info = data_cache.read_cache(self.cache)
    self.assertEqual(info.streams, ("rgb",))
    rgb_file = info.stream_path(info.entries[0], "rgb")
    before = os.stat(rgb_file).st_mtime_ns
    report = self.prepare(streams=("rgb", "flow"))
    self.assertEqual(report.num_prepared, 2)
    self.assertEqual(os.stat(rgb_file).st_mtime_ns, before)
    self.assertEqual(data_cache.read_cache(self.cache).streams, ("rgb", "flow"))

  def test_parallel_workers_prepare_the_same_cache(self):
    self.write_good_videos(3)
    report = self.prepare(num_workers=2)
    self.assertEqual((report.num_prepared, len(report.failures)), (3, 0))
    info = data_cache.read_cache(self.cache)
    self.assertEqual([(e.path, e.video_frames) for e in info.entries],
                     [("crunch_correct/v1.mp4", 9), ("squat_correct/v0.mp4", 8),
                      ("squat_correct/v2.mp4", 10)])
    self.assertEqual(info.classes, CLASSES)

  def test_a_second_preparation_on_the_same_cache_is_refused(self):
    self.write_good_videos(1)
    os.makedirs(self.cache)
    with open(os.path.join(self.cache, ".prepare.lock"), "a") as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      with self.assertRaisesRegex(data_sources.DatasetError, "another preparation"):
        self.prepare()

  def test_read_cache_of_an_empty_directory(self):
    with self.assertRaisesRegex(data_sources.DatasetError, "not a prepared dataset"):
      data_cache.read_cache(self.create_tempdir().full_path)


class PipelineTest(parameterized.TestCase):
  """tf.data pipelines over one prepared cache of six short clips."""

  NUM_FRAMES = 8
  CROP = 32

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = testdata.class_tempdir(cls)
    cls.cache = os.path.join(cls.root, "cache")
    lengths = [14, 18, 6, 20, 16, 12]
    rows = []
    for i, length in enumerate(lengths):
      path = write_clip(os.path.join(cls.root, "clips", f"c{i}.mp4"), length,
                        seed=i)
      rows.append({"path": os.path.relpath(path, cls.root),
                   "label": CLASSES[i % 2], "subject": f"s{i // 2}"})
    manifest = write_manifest(os.path.join(cls.root, "videos.csv"), rows)
    report = data_cache.prepare_dataset(
        cls.cache, manifest=manifest, classes=CLASSES, config=SMALL,
        eval_fraction=0.3, seed=0)
    assert report.ok, report.summary()
    cls.info = data_cache.read_cache(cls.cache)

  def full(self, split: str, index: int, stream: str) -> np.ndarray:
    entry = self.info.split_entries(split)[index]
    return data_pipeline.read_cached_video(self.info, entry, stream)

  def test_cache_metadata_and_subject_split(self):
    self.assertEqual(self.info.classes, CLASSES)
    self.assertEqual(self.info.config, SMALL)
    self.assertEqual(self.info.streams, ("rgb", "flow"))
    self.assertEqual([e.video_frames for e in self.info.entries],
                     [14, 18, 6, 20, 16, 12])
    self.assertEqual({(e.height, e.width) for e in self.info.entries},
                     {(48, 64)})
    with open(os.path.join(self.cache, "splits.json")) as f:
      self.assertEqual(json.load(f)["method"], "subject")
    subjects = {split: {e.subject for e in self.info.split_entries(split)}
                for split in ("train", "eval")}
    self.assertLen(subjects["eval"], 1)
    self.assertLen(subjects["train"], 2)
    self.assertEmpty(subjects["train"] & subjects["eval"])

  def test_cache_size_is_compact(self):
    total_bytes = sum(os.path.getsize(p) for p in glob.glob(
        os.path.join(self.cache, "videos", "*.pb")))
    total_frames = sum(e.video_frames for e in self.info.entries)
    # A float32 copy of both streams would be 48*64*5*4 = 61 kB per frame.
    self.assertLess(total_bytes / total_frames, 6000)

  def test_train_batches(self):
    train = data_pipeline.make_train_dataset(
        self.cache, "train", num_frames=self.NUM_FRAMES, crop_size=self.CROP,
        batch_size=3, seed=0)
    entries = self.info.split_entries("train")
    for batch in train.take(3):
      self.assertEqual(batch["rgb"].shape, (3, 8, 32, 32, 3))
      self.assertEqual(batch["flow"].shape, (3, 8, 32, 32, 2))
      self.assertEqual((batch["label"].dtype.name, batch["index"].dtype.name),
                       ("int32", "int32"))
      for stream in ("rgb", "flow"):
        values = batch[stream].numpy()
        self.assertEqual(values.dtype, np.float32)
        self.assertBetween(values.min(), -1.0, 1.0)
        self.assertBetween(values.max(), -1.0, 1.0)
      for label, index in zip(batch["label"].numpy(), batch["index"].numpy()):
        self.assertEqual(label, entries[index].label_index)

  def test_train_is_reproducible_for_a_seed(self):
    def first_batch(seed):
      return next(iter(data_pipeline.make_train_dataset(
          self.cache, num_frames=4, crop_size=self.CROP, batch_size=2,
          seed=seed)))
    a, b = first_batch(3), first_batch(3)
    np.testing.assert_array_equal(a["flow"], b["flow"])
    np.testing.assert_array_equal(a["index"], b["index"])

  def test_train_passes_are_the_first_of_the_endless_dataset_and_end(self):
    def batches(repeat):
      return data_pipeline.make_train_dataset(
          self.cache, num_frames=4, crop_size=self.CROP, batch_size=2,
          seed=5, streams=("flow",), repeat=repeat)
    num_videos = len(self.info.split_entries("train"))
    finite = list(batches(3))
    self.assertNotEqual(batches(3).cardinality(), tf.data.INFINITE_CARDINALITY)
    indices = np.concatenate([b["index"].numpy() for b in finite])
    np.testing.assert_array_equal(np.bincount(indices, minlength=num_videos),
                                  [3] * num_videos)
    endless = list(batches(True).take(len(finite)))
    for a, b in zip(finite, endless):
      size = len(a["index"])
      np.testing.assert_array_equal(a["index"], b["index"][:size])
      np.testing.assert_array_equal(a["flow"], b["flow"][:size])

  def test_train_crops_align_and_mirroring_negates_flow_x(self):
    train = data_pipeline.make_train_dataset(
        self.cache, "train", num_frames=self.NUM_FRAMES, crop_size=self.CROP,
        batch_size=4, seed=1)
    mirrors = set()
    for batch in train.take(4):
      for i, index in enumerate(batch["index"].numpy()):
        rgb, flow = batch["rgb"][i].numpy(), batch["flow"][i].numpy()
        full_rgb = self.full("train", index, "rgb")
        full_flow = self.full("train", index, "flow")
        start, top, left, mirror = self.locate(rgb, full_rgb)
        mirrors.add(mirror)
        frames = (start + np.arange(self.NUM_FRAMES)) % len(full_rgb)
        window = (frames, slice(top, top + self.CROP),
                  slice(left, left + self.CROP))
        expected_rgb, expected_flow = full_rgb[window], full_flow[window]
        if mirror:
          expected_rgb = expected_rgb[:, :, ::-1]
          expected_flow = expected_flow[:, :, ::-1] * [-1.0, 1.0]
        np.testing.assert_allclose(rgb, expected_rgb, atol=1e-6)
        np.testing.assert_allclose(flow, expected_flow, atol=1e-6)
        # The texture pans right: mirrored clips move left.
        self.assertEqual(np.median(flow[..., 0]) < 0, mirror)
    self.assertEqual(mirrors, {False, True})

  def locate(self, clip: np.ndarray,
             full: np.ndarray) -> tuple[int, int, int, bool]:
    """Finds the unique (start, top, left, mirror) cutting `clip` off `full`."""
    matches = []
    for mirror in (False, True):
      first = clip[0, :, ::-1] if mirror else clip[0]
      for start, frame in enumerate(full):
        distance = cv2.matchTemplate(frame, np.ascontiguousarray(first),
                                     cv2.TM_SQDIFF)
        # Exact matches, up to the rounding of matchTemplate's correlation.
        matches += [(start, int(top), int(left), mirror)
                    for top, left in zip(*np.nonzero(distance < 1e-2))]
    self.assertLen(matches, 1)
    return matches[0]

  def test_short_videos_loop(self):
    split, index = next(
        (s, i) for s in ("train", "eval")
        for i, e in enumerate(self.info.split_entries(s)) if e.video_frames == 6)
    views = data_pipeline.make_eval_dataset(self.cache, split, num_frames=16,
                                      crop_size=self.CROP)
    element = next(e for e in views if e["index"] == index)
    rgb = element["rgb"][0].numpy()
    self.assertEqual(rgb.shape, (16, 32, 32, 3))
    np.testing.assert_array_equal(rgb[6:12], rgb[:6])
    np.testing.assert_array_equal(rgb[12:], rgb[:4])

  def test_eval_views_are_clips_times_crops(self):
    evaluation = data_pipeline.make_eval_dataset(
        self.cache, "train", num_frames=self.NUM_FRAMES, crop_size=self.CROP,
        num_clips=2, num_crops=3)
    entries = self.info.split_entries("train")
    elements = list(evaluation)
    self.assertEqual([int(e["index"]) for e in elements],
                     list(range(len(entries))))
    for element in elements:
      entry = entries[int(element["index"])]
      self.assertEqual(int(element["label"]), entry.label_index)
      self.assertEqual(element["rgb"].shape, (6, 8, 32, 32, 3))
      self.assertEqual(element["flow"].shape, (6, 8, 32, 32, 2))
      full = self.full("train", int(element["index"]), "flow")
      starts = data_pipeline.evenly_spaced_starts(entry.video_frames, 8, 2)
      offsets = video_preprocess.crop_offsets(48, 64, self.CROP, 3)
      for view in range(6):
        frames = (starts[view // 3] + np.arange(8)) % entry.video_frames
        top, left = offsets[view % 3]
        np.testing.assert_array_equal(
            element["flow"][view].numpy(),
            full[frames, top:top + 32, left:left + 32])

  def test_whole_video_eval_matches_on_the_fly_preprocessing(self):
    evaluation = data_pipeline.make_eval_dataset(
        self.cache, "eval", crop_size=self.CROP)
    for element, entry in zip(evaluation, self.info.split_entries("eval")):
      self.assertEqual(element["rgb"].shape, (1, entry.video_frames, 32, 32, 3))
      direct = video_preprocess.load_clip(os.path.join(self.info.root, entry.path),
                               streams_lib.STREAMS, SMALL, crop_size=self.CROP)
      cached = {stream: element[stream][0].numpy() for stream in streams_lib.STREAMS}
      # Only JPEG and flow quantisation separate the cached path from the
      # direct one: far less than a crop one pixel or one frame off.
      error = np.abs(cached["rgb"] - direct["rgb"]).mean()
      pixel_off = np.abs(cached["rgb"][:, :, 1:] -
                         direct["rgb"][:, :, :-1]).mean()
      frame_off = np.abs(cached["rgb"][1:] - direct["rgb"][:-1]).mean()
      self.assertLess(error, 0.5 * min(pixel_off, frame_off))
      self.assertLess(np.abs(cached["flow"] - direct["flow"]).mean(), 0.01)

  def test_whole_videos_come_as_bounded_clips_covering_every_frame(self):
    # Windows of 5 frames, 2 per element, 3 crops: a video of 14 frames is
    # clips [0, 5), [5, 10), [9, 14) in two elements of 6 and 3 views.
    views = data_pipeline.make_eval_dataset(
        self.cache, "train", crop_size=self.CROP, num_crops=3, window=5,
        windows_per_batch=2)
    entries = self.info.split_entries("train")
    gathered = {}
    for element in views:
      self.assertLessEqual(element["flow"].shape[0], 2 * 3)
      self.assertEqual(element["flow"].shape[1], 5)
      gathered.setdefault(int(element["index"]), []).append(
          element["flow"].numpy())
    self.assertCountEqual(gathered, range(len(entries)))
    offsets = video_preprocess.crop_offsets(48, 64, self.CROP, 3)
    for index, entry in enumerate(entries):
      full = self.full("train", index, "flow")
      expected = [full[start:end, top:top + 32, left:left + 32]
                  for start, end in video_preprocess.clip_windows(
                      entry.video_frames, 5, 5)
                  for top, left in offsets]
      np.testing.assert_array_equal(np.concatenate(gathered[index]),
                                    np.stack(expected))

  def test_errors_for_streams_crops_and_splits(self):
    with self.assertRaisesRegex(data_sources.DatasetError, "does not fit"):
      data_pipeline.make_train_dataset(self.cache, crop_size=56)
    with self.assertRaisesRegex(data_sources.DatasetError, "no split 'test'"):
      data_pipeline.make_eval_dataset(self.cache, "test", crop_size=self.CROP)
    with self.assertRaisesRegex(ValueError, "num_clips"):
      data_pipeline.make_eval_dataset(self.cache, num_clips=2, crop_size=self.CROP)


class SingleStreamTest(absltest.TestCase):

  def test_rgb_only_cache_and_pipeline(self):
    root = self.create_tempdir().full_path
    for i in range(2):
      write_clip(os.path.join(root, CLASSES[i], f"v{i}.mp4"), 10, seed=i)
    cache = os.path.join(root, "cache")
    data_cache.prepare_dataset(cache, data_dir=root, classes=CLASSES,
                            streams=("rgb",), config=SMALL, eval_fraction=0.0)
    self.assertEmpty(glob.glob(os.path.join(cache, "videos", "*.flow.pb")))
    batch = next(iter(data_pipeline.make_train_dataset(
        cache, streams=("rgb",), num_frames=4, crop_size=32, batch_size=2,
        seed=0)))
    self.assertEqual(set(batch), {"rgb", "label", "index"})
    self.assertEqual(batch["rgb"].shape, (2, 4, 32, 32, 3))
    with self.assertRaisesRegex(data_sources.DatasetError, "--streams=rgb,flow"):
      data_pipeline.make_train_dataset(cache, streams=("rgb", "flow"), crop_size=32)


if __name__ == "__main__":
  absltest.main()
