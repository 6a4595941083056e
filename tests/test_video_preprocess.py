"""Tests of i3d.video.preprocess and i3d.video.io on videos written by the tests."""

import math
import os
import pickle
import struct
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import cv2
import numpy as np

from i3d import streams as streams_lib
from i3d.video import flow
from i3d.video import io as video_io
from i3d.video import preprocess as video_preprocess
from tests import testdata

SQUARE_PX = 16
INDEX_BLOCK_PX = 16


def moving_square_frames(num_frames: int,
                         height: int = 96,
                         width: int = 128,
                         speed_px: float = 2.0,
                         seed: int = 0) -> np.ndarray:
  """Frames of a textured square moving right over a still textured background.

  Frame i also shows its index as the brightness 8 + 8 i of the top-left
  16 x 16 block (see `frame_index`).

  Args:
    num_frames: number of frames (at most 31, for the index block).
    height: frame height.
    width: frame width.
    speed_px: rightward motion of the square per frame, in pixels.
    seed: seed of the textures.

  Returns:
    uint8 RGB frames (num_frames, height, width, 3).
  """
  rng = np.random.default_rng(seed)
  coarse = rng.integers(60, 140, (height // 8 + 1, width // 8 + 1, 3))
  background = cv2.resize(coarse.astype(np.uint8), (width, height),
                          interpolation=cv2.INTER_LINEAR)
  texture = np.kron(rng.integers(0, 256, (4, 4, 3)),
                    np.ones((4, 4, 1))).astype(np.uint8)
  top = (height - SQUARE_PX) // 2
  frames = np.repeat(background[None], num_frames, axis=0)
  for i, frame in enumerate(frames):
    left = int(round(INDEX_BLOCK_PX + 4 + speed_px * i))
    frame[top:top + SQUARE_PX, left:left + SQUARE_PX] = texture
    frame[:INDEX_BLOCK_PX, :INDEX_BLOCK_PX] = min(8 + 8 * i, 255)
  return frames


def frame_index(frame: np.ndarray,
                scale: float,
                corner: str = "top_left") -> int:
  """Reads the index written by `moving_square_frames` from a decoded frame.

  Args:
    frame: a decoded RGB frame.
    scale: the resize factor applied to the written frames.
    corner: where the index block is after decoding ("top_right" once a
      90 degree clockwise rotation is applied).
  """
  size = int(INDEX_BLOCK_PX * scale)
  inner = slice(1, size - 1)
  columns = inner if corner == "top_left" else slice(-size + 1, -1)
  block = frame[inner, columns]
  return int(round((block.mean() - 8) / 8))


def set_rotation_90(path: str) -> None:
  """Marks an OpenCV-written MP4 as "rotate 90 degrees clockwise to display".

  Phones record portrait clips as landscape frames with such a display matrix
  in the track header (tkhd).
  """
  with open(path, "rb") as f:
    data = bytearray(f.read())
  box = data.find(b"tkhd") - 4
  assert box >= 0 and data[box + 8] == 0, "expected a version 0 tkhd box"
  one = 1 << 16
  matrix = struct.pack(">9i", 0, one, 0, -one, 0, 0, 0, 0, 1 << 30)
  data[box + 48:box + 84] = matrix
  with open(path, "wb") as f:
    f.write(bytes(data))


def write_truncated_copy(source: str, path: str) -> str:
  """Writes the first half of a file, as an interrupted copy would."""
  with open(source, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])
  return path


def write_corrupt_copy(source: str, path: str) -> str:
  """Copies an MP4 with the second half of its frame data zeroed."""
  with open(source, "rb") as f:
    data = bytearray(f.read())
  start, end = data.find(b"mdat") + 4, data.find(b"moov") - 4
  middle = (start + end) // 2
  data[middle:end] = bytes(end - middle)
  with open(path, "wb") as f:
    f.write(bytes(data))
  return path


class ReadVideoTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.dir = self.create_tempdir().full_path

  @parameterized.named_parameters(
      ("30fps", 30.0, 30, 25),
      ("24fps", 24.0, 24, 25),
      ("25fps", 25.0, 25, 25),
      ("30fps_partial_second", 30.0, 20, 17),
  )
  def test_resamples_to_25_fps_by_timestamp(self, source_fps, num_frames,
                                            expected_frames):
    path = testdata.write_clip(os.path.join(self.dir, "clip.mp4"),
                       moving_square_frames(num_frames), source_fps)
    frames = video_io.read_video(path, fps=25.0, short_side=96)
    self.assertLen(frames, expected_frames)
    # Output frame k shows the source frame on screen at k / 25 s.
    expected = [math.floor(k * source_fps / 25.0 + 1e-9)
                for k in range(expected_frames)]
    self.assertEqual([frame_index(f, 1.0) for f in frames], expected)

  def test_resizes_short_side_keeping_aspect_odd_size(self):
    # OpenCV writes 161x97 as 160x96; 96 -> 64 makes the width 106.67 -> 107.
    path = testdata.write_clip(os.path.join(self.dir, "odd.mp4"),
                       moving_square_frames(6, height=97, width=161), 30.0)
    frames = video_io.read_video(path, short_side=64)
    self.assertEqual(frames.shape, (5, 64, 107, 3))
    self.assertEqual(frames.dtype, np.uint8)

  def test_native_portrait_keeps_orientation(self):
    path = testdata.write_clip(os.path.join(self.dir, "portrait.mp4"),
                       moving_square_frames(6, height=128, width=96), 30.0)
    frames = video_io.read_video(path, short_side=48)
    self.assertEqual(frames.shape[1:], (64, 48, 3))

  def test_rotation_metadata_is_applied(self):
    path = testdata.write_clip(os.path.join(self.dir, "phone.mp4"),
                       moving_square_frames(10, height=96, width=128), 30.0)
    set_rotation_90(path)
    frames = video_io.read_video(path, short_side=48)
    # Landscape 128x96 frames shown rotated clockwise: portrait, index block
    # (top-left in the file) at the top right.
    self.assertEqual(frames.shape[1:], (64, 48, 3))
    self.assertEqual([frame_index(f, 0.5, "top_right") for f in frames[:4]],
                     [0, 1, 2, 3])
    # The square moves right in the file, so down on screen.
    flows = flow.compute_flow(frames, "dis")[:-1]
    moving = np.abs(flows).max(axis=-1) > 0.02
    self.assertGreater(float(np.median(flows[..., 1][moving])), 0.02)
    self.assertLess(abs(float(np.median(flows[..., 0][moving]))), 0.01)

  def test_max_frames(self):
    path = testdata.write_clip(os.path.join(self.dir, "clip.mp4"),
                       moving_square_frames(30), 30.0)
    frames = video_io.read_video(path, short_side=48, max_frames=7)
    self.assertLen(frames, 7)
    self.assertEqual(frame_index(frames[-1], 0.5), 7)

  def test_bad_files_raise_video_error_with_path_and_reason(self):
    good = testdata.write_clip(os.path.join(self.dir, "good.mp4"),
                       moving_square_frames(30), 30.0)
    not_video = os.path.join(self.dir, "notes.mp4")
    with open(not_video, "wb") as f:
      f.write(b"these are not the frames you are looking for" * 50)
    empty = os.path.join(self.dir, "empty.mp4")
    open(empty, "wb").close()
    cases = {
        os.path.join(self.dir, "missing.mp4"): "file not found",
        empty: "empty file",
        not_video: "cannot be opened as a video",
        write_truncated_copy(good, os.path.join(self.dir, "cut.mp4")):
            "truncated before its index",
        write_corrupt_copy(good, os.path.join(self.dir, "corrupt.mp4")):
            "truncated or corrupt: decoded",
    }
    for path, reason in cases.items():
      with self.subTest(path=path):
        with self.assertRaises(video_io.VideoError) as raised:
          video_io.read_video(path)
        self.assertEqual(raised.exception.path, path)
        self.assertIn(reason, raised.exception.reason)
        self.assertEqual(str(raised.exception),
                         f"{path}: {raised.exception.reason}")

  def test_video_error_survives_pickling(self):
    error = pickle.loads(pickle.dumps(video_io.VideoError("a.mp4", "broken")))
    self.assertEqual((error.path, error.reason, str(error)),
                     ("a.mp4", "broken", "a.mp4: broken"))


class PreprocessTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.path = testdata.write_clip(
        os.path.join(self.create_tempdir().full_path, "clip.mp4"),
        moving_square_frames(12, height=96, width=128), 30.0)
    self.config = video_preprocess.PreprocessConfig(short_side=48, flow_algorithm="dis")

  def test_rgb_to_model_range(self):
    values = video_preprocess.rgb_to_model(np.array([0, 255, 51], np.uint8))
    self.assertEqual(values.dtype, np.float32)
    np.testing.assert_allclose(values, [-1.0, 1.0, -0.6], atol=1e-6)
    with self.assertRaises(ValueError):
      video_preprocess.rgb_to_model(np.zeros(3, np.float32))

  @parameterized.parameters((("rgb",),), (("flow",),), (("rgb", "flow"),))
  def test_preprocess_computes_only_the_streams_asked(self, streams):
    arrays = video_preprocess.preprocess_video(self.path, streams, self.config)
    self.assertEqual(set(arrays), set(streams))
    channels = {"rgb": 3, "flow": 2}
    for stream, array in arrays.items():
      self.assertEqual(array.shape, (10, 48, 64, channels[stream]))
      self.assertEqual(array.dtype, np.float32)
      self.assertBetween(array.min(), -1.0, 1.0)
      self.assertBetween(array.max(), -1.0, 1.0)
    if "rgb" in arrays:
      # Real content, not a constant: the range is used.
      self.assertLess(arrays["rgb"].min(), -0.4)
      self.assertGreater(arrays["rgb"].max(), 0.4)

  def test_load_clip_is_the_centre_crop(self):
    full = video_preprocess.preprocess_video(self.path, streams_lib.STREAMS, self.config)
    clip = video_preprocess.load_clip(self.path, streams_lib.STREAMS, self.config, crop_size=32)
    self.assertEqual(clip["rgb"].shape, (10, 32, 32, 3))
    self.assertEqual(clip["flow"].shape, (10, 32, 32, 2))
    np.testing.assert_array_equal(clip["rgb"], full["rgb"][:, 8:40, 16:48])
    np.testing.assert_array_equal(clip["flow"], full["flow"][:, 8:40, 16:48])
    with self.assertRaisesRegex(ValueError, "larger than short_side"):
      video_preprocess.load_clip(self.path, ("rgb",), self.config, crop_size=64)

  def test_one_frame_video_has_rgb_but_no_flow(self):
    path = testdata.write_clip(os.path.join(self.create_tempdir().full_path, "one.mp4"),
                       moving_square_frames(1), 30.0)
    self.assertLen(
        video_preprocess.preprocess_video(path, ("rgb",), self.config)["rgb"], 1)
    with self.assertRaisesRegex(video_io.VideoError, "too short for optical flow"):
      video_preprocess.preprocess_video(path, ("rgb", "flow"), self.config)

  def test_invalid_streams(self):
    for streams in ((), ("depth",), "rgb,depth"):
      with self.subTest(streams=streams):
        with self.assertRaises(ValueError):
          video_preprocess.preprocess_video(self.path, streams, self.config)


class WriteVideoTest(absltest.TestCase):

  def test_round_trip_and_no_partial_file_on_error(self):
    directory = self.create_tempdir().full_path
    path = os.path.join(directory, "clip.avi")
    video_io.write_video(path, moving_square_frames(5), 25.0, fourcc="MJPG")
    self.assertEqual(video_io.read_video(path, short_side=96).shape,
                     (5, 96, 128, 3))
    with self.assertRaises(ValueError):
      video_io.write_video(os.path.join(directory, "bad.mp4"),
                        np.zeros((2, 8, 8), np.uint8), 25.0)
    self.assertEqual(os.listdir(directory), ["clip.avi"])


class _FakeCapture:
  """A cv2.VideoCapture whose container metadata and timestamps we choose.

  Frame i is filled with the value i, so the output shows which source frame
  each output frame is.
  """

  def __init__(self, timestamps_ms, frame_count, fps):
    self._timestamps = list(timestamps_ms)
    self._metadata = {cv2.CAP_PROP_FRAME_COUNT: frame_count,
                      cv2.CAP_PROP_FPS: fps}
    self._read = 0

  def isOpened(self):  # pylint: disable=invalid-name
    return True

  def set(self, prop, value):
    del prop, value  # Unused.
    return True

  def read(self):
    if self._read == len(self._timestamps):
      return False, None
    self._read += 1
    return True, np.full((4, 6, 3), self._read - 1, np.uint8)

  def get(self, prop):
    if prop == cv2.CAP_PROP_POS_MSEC:
      return self._timestamps[self._read - 1]
    return self._metadata[prop]

  def release(self):
    pass


class LyingMetadataTest(parameterized.TestCase):
  """Frames are placed by their timestamps, whatever the container says."""

  def test_browser_recording_is_read_like_its_constant_rate_copy(self):
    # shared/cases: VP8 WebM, 90 frames over 3 s with jittered millisecond
    # timestamps; OpenCV reports 1000 fps and 3000 frames.
    recording = os.path.join(testdata.CASES, "browser_recording.webm")
    copy = os.path.join(testdata.CASES, "constant_rate_copy.webm")
    self.assertIsNone(video_io.nominal_frame_rate(recording))
    self.assertEqual(video_io.nominal_frame_rate(copy), 30.0)
    frames = video_io.read_video(recording, short_side=64)
    expected = video_io.read_video(copy, short_side=64)
    # About 75 frames at 25 fps: 3 s, +-1 for where the last frame ends.
    self.assertBetween(len(frames), 74, 76)
    self.assertLessEqual(abs(len(frames) - len(expected)), 1)
    # The same source frame at (nearly) every output time: jitter moves a
    # few frame boundaries by one.
    same = [np.abs(a.astype(int) - b).mean() < 2.0
            for a, b in zip(frames, expected)]
    self.assertGreater(np.mean(same), 0.85)
    encoded = video_preprocess.encode_video(recording, ("rgb", "flow"),
                                 video_preprocess.PreprocessConfig(short_side=64,
                                                        flow_algorithm="dis"))
    self.assertEqual(encoded.video_frames, len(frames))

  def read(self, timestamps_ms, frame_count=0.0, fps=0.0, fps_out=25.0):
    capture = _FakeCapture(timestamps_ms, frame_count, fps)
    with mock.patch.object(os.path, "isfile", return_value=True), \
        mock.patch.object(os.path, "getsize", return_value=1), \
        mock.patch.object(cv2, "VideoCapture", return_value=capture):
      return [int(f[0, 0, 0]) for f in video_io.iter_frames("x.webm", fps_out,
                                                         short_side=None)]

  @parameterized.named_parameters(
      ("webm_time_base_as_rate", 1000.0, 1000.0),  # Browser WebM, 1 s.
      ("no_count", 0.0, 30.0),
      ("negative_count", -1.0, 30.0),
      ("no_rate", 10.0, float("nan")),
      ("mpeg_ts_time_base_as_rate", 90000.0, 90000.0),
  )
  def test_lying_count_or_rate_is_no_truncation(self, frame_count, fps):
    # 10 frames at 10 fps: 1 s, 25 output frames.
    sources = self.read([100.0 * i for i in range(10)], frame_count, fps)
    self.assertEqual(sources, [int(k * 10 / 25) for k in range(25)])

  @parameterized.named_parameters(
      ("jump_back_at_the_end", [0, 100, 200, 300, 0]),
      ("repeat_at_the_end", [0, 100, 200, 300, 300]),
      ("no_timestamp_at_the_end", [0, 100, 200, 300, float("nan")]),
      ("jump_back_in_the_middle", [0, 100, 50, 300, 400]),
  )
  def test_timestamps_that_do_not_advance(self, timestamps):
    sources = self.read(timestamps, fps_out=10.0)
    # 5 frames 100 ms apart: 0.5 s at 10 fps. A frame without a good
    # timestamp follows its predecessor by one interval; the others keep
    # their own times.
    self.assertEqual(sources, [0, 1, 2, 3, 4])

  def test_truncation_needs_both_count_and_duration_short(self):
    with self.assertRaisesRegex(video_io.VideoError,
                                "truncated or corrupt: decoded 10 frames over "
                                r"1.00 s of the 90 frames over 3.00 s"):
      self.read([100.0 * i for i in range(10)], 90.0, 30.0)
    # A browser recording cut in the middle of its download.
    with self.assertRaisesRegex(video_io.VideoError, "truncated"):
      self.read([100.0 * i for i in range(10)], 3000.0, 1000.0)


class ConfigAndCropTest(parameterized.TestCase):

  def test_fingerprint_is_stable_and_tracks_every_setting(self):
    base = video_preprocess.PreprocessConfig()
    self.assertEqual(base.fingerprint(), video_preprocess.PreprocessConfig().fingerprint())
    variants = [
        video_preprocess.PreprocessConfig(fps=30.0),
        video_preprocess.PreprocessConfig(short_side=128),
        video_preprocess.PreprocessConfig(flow_algorithm="dis"),
        video_preprocess.PreprocessConfig(max_frames=250),
    ]
    fingerprints = {base.fingerprint()} | {v.fingerprint() for v in variants}
    self.assertLen(fingerprints, 5)

  @parameterized.parameters(
      dict(fps=0.0), dict(short_side=1), dict(flow_algorithm="farneback"),
      dict(max_frames=0))
  def test_invalid_config(self, **kwargs):
    with self.assertRaises(ValueError):
      video_preprocess.PreprocessConfig(**kwargs)

  @parameterized.named_parameters(
      ("centre", 64, 86, 1, [(8, 19)]),
      ("three_landscape", 64, 86, 3, [(8, 0), (8, 19), (8, 38)]),
      ("three_portrait", 86, 64, 3, [(0, 8), (19, 8), (38, 8)]),
  )
  def test_crop_offsets(self, height, width, num_crops, expected):
    self.assertEqual(video_preprocess.crop_offsets(height, width, 48, num_crops), expected)

  def test_consecutive_clips_of_a_long_video(self):
    # Multi-clip testing of a long input: clips of 250 frames, one after the
    # other, the last aligned to the end.
    self.assertEqual(video_preprocess.clip_windows(600, 250, 250),
                     [(0, 250), (250, 500), (350, 600)])
    self.assertEqual(video_preprocess.clip_windows(500, 250, 250),
                     [(0, 250), (250, 500)])
    self.assertEqual(video_preprocess.clip_windows(249, 250, 250), [(0, 249)])
    with self.assertRaisesRegex(ValueError, "stride"):
      video_preprocess.clip_windows(600, 250, 0)

  def test_crop_offsets_errors(self):
    with self.assertRaisesRegex(ValueError, "does not fit"):
      video_preprocess.crop_offsets(40, 60, 48)
    with self.assertRaisesRegex(ValueError, "num_crops"):
      video_preprocess.crop_offsets(64, 64, 48, num_crops=2)


if __name__ == "__main__":
  absltest.main()
