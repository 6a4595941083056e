"""Reading and writing video files: decoding with timestamps, encoding.

Decoding resamples to a frame rate by presentation timestamp and resizes to a
short side (`iter_frames`, the first step of DeepMind's preprocessing, see
`i3d.video.preprocess`); `read_bgr_frames` gives a file's own frames; and
`write_video` encodes frames atomically. Every file that cannot be read raises
`VideoError`, naming the file and the problem.

This module depends on OpenCV and NumPy only (no TensorFlow), so that worker
processes which decode videos start quickly.
"""

import os
from typing import Iterator, Tuple

import cv2
import numpy as np

from i3d import fileio

# A decoded frame count below this fraction of the count the container declares
# means the file is truncated or corrupt. The margin tolerates containers whose
# count is an estimate from duration x frame rate (variable frame rate clips).
_MIN_DECODED_FRACTION = 0.9

# Timestamps closer than this (in ms) are treated as equal, to absorb the
# rounding of container time bases.
_TIMESTAMP_TOLERANCE_MS = 1e-3


class VideoError(ValueError):
  """A video file that cannot be turned into frames.

  Attributes:
    path: the video file.
    reason: what is wrong with it, in words.
  """

  def __init__(self, path: str, reason: str):
    super().__init__(f"{path}: {reason}")
    self.path = path
    self.reason = reason

  def __reduce__(self) -> tuple[type["VideoError"], tuple[str, str]]:
    # Pickling (to and from worker processes) must call the two-argument
    # constructor; ValueError's default would pass only the message.
    return type(self), (self.path, self.reason)


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
  """Returns (height, width) with the shorter side `short_side`, aspect kept."""
  scale = short_side / min(height, width)
  if height <= width:
    return short_side, max(short_side, round(width * scale))
  return max(short_side, round(height * scale)), short_side


def _resize_to_model_scale(frame_bgr: np.ndarray,
                           short_side: int) -> np.ndarray:
  """Resizes a BGR frame (bilinear, anti-aliased) and converts it to RGB."""
  height, width = frame_bgr.shape[:2]
  new_height, new_width = resized_shape(height, width, short_side)
  if (new_height, new_width) != (height, width):
    # Bilinear as in DeepMind's (FFmpeg) pipeline. OpenCV's bilinear reads
    # only 2x2 source pixels, so shrinking by 2x or more would alias and keep
    # the full sensor noise, unlike FFmpeg's, which filters over the whole
    # footprint. Averaging whole blocks first (the fast integer-factor area
    # filter) and interpolating the remaining factor (< 2) is close to it.
    block = min(height // new_height, width // new_width)
    if block >= 2:
      frame_bgr = cv2.resize(frame_bgr, None, fx=1 / block, fy=1 / block,
                             interpolation=cv2.INTER_AREA)
    frame_bgr = cv2.resize(frame_bgr, (new_width, new_height),
                           interpolation=cv2.INTER_LINEAR)
  return cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)


def _decoded_frames(
    capture: cv2.VideoCapture) -> Iterator[tuple[np.ndarray, float]]:
  """Yields (BGR frame, timestamp in ms from the first frame) for each frame."""
  first_timestamp = None
  while True:
    ok, frame = capture.read()
    if not ok:
      return
    timestamp = capture.get(cv2.CAP_PROP_POS_MSEC)
    if first_timestamp is None:
      first_timestamp = timestamp
    yield frame, timestamp - first_timestamp


def iter_frames(path: str,
                fps: float = 25.0,
                short_side: int = 256,
                max_frames: int | None = None) -> Iterator[np.ndarray]:
  """Decodes a video lazily, resampled to `fps` and resized.

  Resampling is by presentation timestamp, as FFmpeg's `-r` does: the output
  frame at time k / fps is the last source frame shown at that time, so 30 fps
  sources drop every sixth frame, 24 fps sources repeat every 24th, and
  variable frame rate clips keep their real timing. The output covers the
  source's duration (last timestamp plus one frame interval). Rotation metadata
  is applied, so portrait phone clips come out upright.

  Args:
    path: a video file OpenCV's FFmpeg backend can read.
    fps: output frame rate.
    short_side: the shorter side of the output frames, in pixels.
    max_frames: stop after this many output frames; None for the whole video.

  Yields:
    uint8 RGB frames of shape (H, W, 3).

  Raises:
    VideoError: if the file is missing, cannot be opened, has no decodable
      frame, or stops well before the frame count its container declares.
      Errors found at the end (truncation) are raised after the frames decoded
      so far have been yielded.
  """
  if not os.path.isfile(path):
    raise VideoError(path, "file not found")
  if os.path.getsize(path) == 0:
    raise VideoError(path, "empty file (0 bytes)")
  capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
  try:
    if not capture.isOpened():
      raise VideoError(
          path, "cannot be opened as a video (not a video file, truncated "
          "before its index, or an unsupported codec)")
    # OpenCV 5's FFmpeg backend already applies rotation metadata by default;
    # asking explicitly keeps portrait clips upright if that default changes.
    capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
    declared_frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    source_fps = capture.get(cv2.CAP_PROP_FPS)
    output_interval_ms = 1000.0 / fps
    num_output = 0
    num_decoded = 0
    previous_frame = None
    previous_rgb = None
    previous_timestamp = 0.0
    frame_interval_ms = (1000.0 / source_fps if source_fps > 0 else
                         output_interval_ms)

    def emit_until(end_ms: float) -> Iterator[np.ndarray]:
      """Yields the previous frame for every output time before `end_ms`."""
      nonlocal num_output, previous_rgb
      while (num_output * output_interval_ms < end_ms - _TIMESTAMP_TOLERANCE_MS
             and (max_frames is None or num_output < max_frames)):
        if previous_rgb is None:
          previous_rgb = _resize_to_model_scale(previous_frame, short_side)
        num_output += 1
        yield previous_rgb

    for frame, timestamp in _decoded_frames(capture):
      num_decoded += 1
      if previous_frame is not None:
        if timestamp > previous_timestamp:
          frame_interval_ms = timestamp - previous_timestamp
        yield from emit_until(timestamp)
        if max_frames is not None and num_output >= max_frames:
          return
      previous_frame, previous_rgb, previous_timestamp = frame, None, timestamp
    if previous_frame is None:
      raise VideoError(
          path, "no frame could be decoded (empty, truncated or corrupt file, "
          "or an unsupported codec)")
    yield from emit_until(previous_timestamp + frame_interval_ms)
    if num_decoded < _MIN_DECODED_FRACTION * declared_frames:
      raise VideoError(
          path, f"truncated or corrupt: decoded {num_decoded} of the "
          f"{declared_frames} frames its container declares")
  finally:
    capture.release()


def read_video(path: str,
               fps: float = 25.0,
               short_side: int = 256,
               max_frames: int | None = None) -> np.ndarray:
  """Decodes a whole video, resampled to `fps` and resized (see `iter_frames`).

  Args:
    path: a video file.
    fps: output frame rate.
    short_side: the shorter side of the output frames, in pixels.
    max_frames: keep at most this many frames from the start; None for all.

  Returns:
    uint8 RGB frames, shape (T, H, W, 3), T >= 1.

  Raises:
    VideoError: if the file cannot be decoded (see `iter_frames`).
  """
  return np.stack(list(iter_frames(path, fps, short_side, max_frames)))


def write_video(path: str, frames_uint8_rgb: np.ndarray, fps: float,
                fourcc: str = "mp4v") -> None:
  """Writes uint8 RGB frames to a video file atomically.

  The container follows the file's extension (.mp4, .avi, ...). OpenCV's
  writer rounds odd frame sizes down to even ones.

  Args:
    path: the output file.
    frames_uint8_rgb: uint8 RGB frames, shape (T, H, W, 3), T >= 1.
    fps: frame rate.
    fourcc: the codec's four-character code ("mp4v" is always available).

  Raises:
    ValueError: for frames of the wrong shape or dtype.
    VideoError: if OpenCV cannot write this codec and container.
  """
  frames = np.asarray(frames_uint8_rgb)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"expected uint8 frames (T, H, W, 3), got {frames.dtype} "
                     f"{frames.shape}")
  height, width = frames.shape[1:3]
  with fileio.atomic_path(path) as tmp:
    # OpenCV picks the container from the file extension, which the temporary
    # name lacks: write beside it with the extension, then move it there.
    staging = tmp + os.path.splitext(path)[1]
    try:
      writer = cv2.VideoWriter(staging, cv2.VideoWriter_fourcc(*fourcc), fps,
                               (width, height))
      if not writer.isOpened():
        raise VideoError(path, f"OpenCV cannot write {fourcc!r} video here")
      for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
      writer.release()
      with open(staging, "rb") as f:
        os.fsync(f.fileno())
      os.replace(staging, tmp)
    finally:
      if os.path.exists(staging):
        os.remove(staging)


def read_bgr_frames(path: str) -> Tuple[Iterator[np.ndarray], float]:
  """Opens a video file as it is: its own frames, rate and size.

  Args:
    path: a video file OpenCV can read.

  Returns:
    (an iterator over its uint8 BGR frames (H, W, 3), its frame rate; 0 when
    the container does not say).

  Raises:
    VideoError: if the file is missing or cannot be opened.
  """
  if not os.path.isfile(path):
    raise VideoError(path, "file not found")
  capture = cv2.VideoCapture(path)
  if not capture.isOpened():
    raise VideoError(path, "OpenCV cannot open the video")
  file_fps = capture.get(cv2.CAP_PROP_FPS)

  def frames() -> Iterator[np.ndarray]:
    try:
      while True:
        ok, frame = capture.read()
        if not ok:
          return
        yield frame
    finally:
      capture.release()

  return frames(), file_fps
