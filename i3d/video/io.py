"""Reading and writing video files: decoding with timestamps, encoding.

Decoding resamples to a frame rate by presentation timestamp and resizes to a
short side (`iter_frames`, the first step of DeepMind's preprocessing, see
`i3d.video.preprocess`), by the frames' timestamps rather than the container's
nominal rate and count (`iter_timed_frames`); `read_bgr_frames` gives a file's
frames at their own size and a constant rate; and
`write_video` encodes frames atomically. Every file that cannot be read raises
`VideoError`, naming the file and the problem.

This module depends on OpenCV and NumPy only (no TensorFlow), so that worker
processes which decode videos start quickly.
"""

import math
import os
from typing import Iterator, Optional, Tuple

import cv2
import numpy as np

from i3d import fileio

# Decoding less than this fraction of both the frame count and the duration the
# container declares means the file is truncated or corrupt. The margin
# tolerates containers whose count is an estimate from duration x frame rate
# (variable frame rate clips).
_MIN_DECODED_FRACTION = 0.9

# Timestamps closer than this (in ms) are treated as equal, to absorb the
# rounding of container time bases.
_TIMESTAMP_TOLERANCE_MS = 1e-3

# Nominal rates above this are container time bases (WebM's 1000 Hz, MPEG-TS's
# 90 kHz), not frame rates: high-speed phone modes record at up to 240 fps.
MAX_PLAUSIBLE_FPS = 250.0
# The rate of a file's own frames when it declares no plausible one.
_DEFAULT_FPS = 25.0


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


def _declared_timing(capture: cv2.VideoCapture) -> tuple[float, float]:
  """The frame count and rate a container declares; 0 for what it lacks.

  Both may lie: WebM files from browsers and screen recorders declare their
  1 kHz time base as the rate (1000 fps) and duration x 1000 frames; some
  containers give 0 or -1 frames, or a NaN rate.
  """
  frames, fps = (capture.get(cv2.CAP_PROP_FRAME_COUNT),
                 capture.get(cv2.CAP_PROP_FPS))
  return (frames if math.isfinite(frames) and frames > 0 else 0.0,
          fps if math.isfinite(fps) and fps > 0 else 0.0)


def nominal_frame_rate(path: str) -> float | None:
  """The frame rate a video's container declares, when it is plausible.

  Args:
    path: a video file.

  Returns:
    The rate in frames per second, or None when the container declares none
    or a time base for one (above `MAX_PLAUSIBLE_FPS`), or cannot be opened.
  """
  capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
  try:
    _, fps = _declared_timing(capture) if capture.isOpened() else (0.0, 0.0)
  finally:
    capture.release()
  return fps if 0 < fps <= MAX_PLAUSIBLE_FPS else None


def iter_timed_frames(
    path: str,
    default_interval_ms: float = 40.0) -> Iterator[tuple[np.ndarray, float, float]]:
  """Decodes every frame of a video with the time it is on screen.

  Times come from the decoded frames' presentation timestamps, not from the
  container's nominal rate or frame count, which often lie (see
  `_declared_timing`). A frame whose timestamp does not advance past the last
  one that did (a repeat, a jump back such as the reset some streams have at
  their end, or none at all) is shown one frame interval after the previous
  frame. The last frame lasts as long as the one before it.

  Args:
    path: a video file OpenCV's FFmpeg backend can read.
    default_interval_ms: how long a frame lasts when the video has a single
      frame and no plausible nominal rate.

  Yields:
    (uint8 BGR frame (H, W, 3), start in ms from the first frame, end in ms),
    starts non-decreasing and each end the next frame's start.

  Raises:
    VideoError: if the file is missing, cannot be opened, has no decodable
      frame, or is truncated: it ends well before both the frame count and
      the duration its container declares. Errors found at the end are raised
      after the frames decoded so far have been yielded.
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
    declared_frames, declared_fps = _declared_timing(capture)
    interval_ms = (1000.0 / declared_fps
                   if 0 < declared_fps <= MAX_PLAUSIBLE_FPS else
                   default_interval_ms)
    num_decoded = 0
    # (raw timestamp, start) of the last frame whose timestamp advanced: later
    # frames are timed from it, so one bad timestamp shifts no other frame.
    anchor = None
    previous = None  # (frame, start) waiting for its end.
    while True:
      ok, frame = capture.read()
      if not ok:
        break
      num_decoded += 1
      raw_ms = capture.get(cv2.CAP_PROP_POS_MSEC)
      advanced = math.isfinite(raw_ms) and (
          anchor is None or raw_ms > anchor[0] + _TIMESTAMP_TOLERANCE_MS)
      if previous is None:
        start = 0.0
      elif advanced and anchor is not None:
        if anchor[1] == previous[1]:  # Two good timestamps in a row.
          interval_ms = raw_ms - anchor[0]
        start = max(anchor[1] + raw_ms - anchor[0], previous[1])
      else:
        start = previous[1] + interval_ms
      if advanced:
        anchor = (raw_ms, start)
      if previous is not None:
        yield previous[0], previous[1], start
      previous = (frame, start)
    if previous is None:
      raise VideoError(
          path, "no frame could be decoded (empty, truncated or corrupt file, "
          "or an unsupported codec)")
    end_ms = previous[1] + interval_ms
    yield previous[0], previous[1], end_ms
    # A count implied by an implausible rate (duration x time base) is no
    # evidence of truncation, so the decoded duration must fall short too.
    declared_ms = (1000.0 * declared_frames / declared_fps
                   if declared_fps else math.inf)
    if (num_decoded < _MIN_DECODED_FRACTION * declared_frames and
        end_ms < _MIN_DECODED_FRACTION * declared_ms):
      raise VideoError(
          path, f"truncated or corrupt: decoded {num_decoded} frames over "
          f"{end_ms / 1000:.2f} s of the {declared_frames:.0f} frames over "
          f"{declared_ms / 1000:.2f} s its container declares")
  finally:
    capture.release()


def iter_frames(path: str,
                fps: float = 25.0,
                short_side: int | None = 256,
                max_frames: int | None = None) -> Iterator[np.ndarray]:
  """Decodes a video lazily, resampled to `fps` and resized.

  Resampling is by presentation timestamp, as FFmpeg's `-r` does: the output
  frame at time k / fps is the last source frame shown at that time, so 30 fps
  sources drop every sixth frame, 24 fps sources repeat every 24th, and
  variable frame rate clips keep their real timing. The output covers the
  source's duration (last timestamp plus one frame interval). Timestamps are
  trusted over the container's nominal rate and frame count (see
  `iter_timed_frames`). Rotation metadata is applied, so portrait phone clips
  come out upright.

  Args:
    path: a video file OpenCV's FFmpeg backend can read.
    fps: output frame rate.
    short_side: the shorter side of the output frames, in pixels; None keeps
      the decoded size.
    max_frames: stop after this many output frames; None for the whole video.

  Yields:
    uint8 RGB frames of shape (H, W, 3).

  Raises:
    VideoError: see `iter_timed_frames`.
  """
  output_interval_ms = 1000.0 / fps
  num_output = 0
  for frame, _, end_ms in iter_timed_frames(path, output_interval_ms):
    rgb = None
    while (num_output * output_interval_ms < end_ms - _TIMESTAMP_TOLERANCE_MS
           and (max_frames is None or num_output < max_frames)):
      if rgb is None:
        rgb = (cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) if short_side is None
               else _resize_to_model_scale(frame, short_side))
      num_output += 1
      yield rgb
    if max_frames is not None and num_output >= max_frames:
      return


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


def read_bgr_frames(path: str, fps: Optional[float] = None
                    ) -> Tuple[Iterator[np.ndarray], float]:
  """Decodes a video file at its own size, at a constant frame rate.

  Frames are placed by their timestamps (see `iter_frames`), so a file whose
  container declares a wrong rate (a browser recording's 1000 fps) or a
  variable rate comes out at the rate returned.

  Args:
    path: a video file OpenCV can read.
    fps: the rate wanted; None for the file's nominal rate when it is
      plausible (`nominal_frame_rate`), else 25.

  Returns:
    (an iterator over uint8 BGR frames (H, W, 3), their frame rate).

  Raises:
    VideoError: if the file is missing or cannot be decoded (raised by the
      iterator).
  """
  if not os.path.isfile(path):
    raise VideoError(path, "file not found")
  fps = fps or nominal_frame_rate(path) or _DEFAULT_FPS
  frames = (cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
            for frame in iter_frames(path, fps, short_side=None))
  return frames, fps
