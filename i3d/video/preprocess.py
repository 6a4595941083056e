"""Video decoding and DeepMind's I3D preprocessing, shared by every entry point.

The recipe follows the kinetics-i3d README: frames sampled at 25 fps, the
shorter side resized to 256 px with the aspect ratio kept, RGB scaled to
[-1, 1], optical flow (TV-L1 by default, see `i3d.flow`) clipped to [-20, 20]
and scaled to [-1, 1], and a 224 x 224 crop (random for training, centred for
evaluation).

This module depends on OpenCV and NumPy only (no TensorFlow), so that worker
processes which decode videos start quickly.
"""

import collections
import dataclasses
import hashlib
import itertools
import json
import os
from typing import Iterator, Sequence

import cv2
import numpy as np

from i3d import fileio
from i3d.video import flow

STREAMS: tuple[str, ...] = ("rgb", "flow")
# Bump when a change to the decoding or resampling changes the frames produced,
# so that prepared caches keyed by `PreprocessConfig.fingerprint` are rebuilt.
PREPROCESSING_VERSION = 1
# A decoded frame count below this fraction of the count the container declares
# means the file is truncated or corrupt. The margin tolerates containers whose
# count is an estimate from duration x frame rate (variable frame rate clips).
_MIN_DECODED_FRACTION = 0.9
# Timestamps closer than this (in ms) are treated as equal, to absorb the
# rounding of container time bases.
_TIMESTAMP_TOLERANCE_MS = 1e-3
# JPEG qualities of cached frames. At 256 px, RGB quality 85 costs about 1 dB
# of PSNR against 90 and saves a fifth of the size, which keeps both streams
# under 50 MB per minute of video; flow images are smooth and cheap at 90.
RGB_JPEG_QUALITY = 85
FLOW_JPEG_QUALITY = 90
# Flow in [-1, 1] is stored as 8-bit round(FLOW_JPEG_SCALE * flow +
# FLOW_JPEG_ZERO): zero motion maps exactly to 128, so still backgrounds decode
# to exactly zero flow.
FLOW_JPEG_SCALE = 127.0
FLOW_JPEG_ZERO = 128.0


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


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
  """Settings that determine the frames and flow computed from a video.

  Attributes:
    fps: frame rate the video is resampled to.
    short_side: length in pixels of the shorter side after resizing.
    flow_algorithm: one of `i3d.flow.FLOW_ALGORITHMS`.
    max_frames: keep at most this many frames from the start (after
      resampling); None keeps the whole video.
  """
  fps: float = 25.0
  short_side: int = 256
  flow_algorithm: str = "tvl1"
  max_frames: int | None = None

  def __post_init__(self) -> None:
    if not self.fps > 0:
      raise ValueError(f"fps must be positive, got {self.fps}")
    if self.short_side < 2:
      raise ValueError(f"short_side must be at least 2, got {self.short_side}")
    if self.flow_algorithm not in flow.FLOW_ALGORITHMS:
      raise ValueError(
          f"unknown flow algorithm {self.flow_algorithm!r}; "
          f"expected one of {', '.join(flow.FLOW_ALGORITHMS)}")
    if self.max_frames is not None and self.max_frames < 1:
      raise ValueError(
          f"max_frames must be None or >= 1, got {self.max_frames}")

  def to_dict(self) -> dict[str, float | int | str | None]:
    """Returns the settings as a JSON-serialisable dict."""
    return dataclasses.asdict(self)

  def fingerprint(self) -> str:
    """Returns a short stable hash of the settings and preprocessing version.

    Two configs with equal fields give the same fingerprint in every process and
    Python version, so it can key cached results.
    """
    settings = {**self.to_dict(), "version": PREPROCESSING_VERSION}
    text = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def validate_streams(streams: Sequence[str]) -> tuple[str, ...]:
  """Checks a stream selection.

  Args:
    streams: a non-empty subset of `STREAMS`, e.g. ("rgb",) or ("rgb", "flow").

  Returns:
    The streams as a tuple, in `STREAMS` order.

  Raises:
    ValueError: if the selection is empty, a string, or names unknown streams.
  """
  if isinstance(streams, str):
    raise ValueError(f"streams must be a sequence of names, got {streams!r}")
  unknown = sorted(set(streams) - set(STREAMS))
  if unknown or not streams:
    raise ValueError(
        f"streams must be a non-empty subset of {STREAMS}, got {tuple(streams)}"
    )
  return tuple(s for s in STREAMS if s in streams)


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


def rgb_to_model(frames_uint8: np.ndarray) -> np.ndarray:
  """Scales uint8 RGB to the model's float32 range [-1, 1] (x / 255 * 2 - 1).

  Args:
    frames_uint8: uint8 array of any shape.

  Returns:
    float32 array of the same shape.

  Raises:
    ValueError: if the array is not uint8.
  """
  if frames_uint8.dtype != np.uint8:
    raise ValueError(f"expected uint8 frames, got {frames_uint8.dtype}")
  # In place, in one pass each: this runs on every decoded frame.
  values = np.multiply(frames_uint8, np.float32(2.0 / 255.0), dtype=np.float32)
  values -= 1.0
  return values


def preprocess_video(
    path: str,
    streams: Sequence[str] = STREAMS,
    config: PreprocessConfig = PreprocessConfig(),
    num_flow_workers: int = 1,
) -> dict[str, np.ndarray]:
  """Decodes a video once and computes the model inputs asked for, uncropped.

  Args:
    path: a video file.
    streams: a subset of ("rgb", "flow"); only these are computed.
    config: the preprocessing settings.
    num_flow_workers: processes for the optical flow (see `flow.compute_flow`).

  Returns:
    A dict with "rgb": float32 (T, H, W, 3) in [-1, 1] and/or "flow": float32
    (T, H, W, 2) in [-1, 1], one flow frame per RGB frame.

  Raises:
    VideoError: if the file cannot be decoded, or is too short for flow.
    ValueError: if `streams` is invalid.
  """
  streams = validate_streams(streams)
  frames = read_video(path, config.fps, config.short_side, config.max_frames)
  outputs = {}
  if "rgb" in streams:
    outputs["rgb"] = rgb_to_model(frames)
  if "flow" in streams:
    if len(frames) < 2:
      raise VideoError(path, too_short_for_flow_reason(len(frames), config.fps))
    outputs["flow"] = flow.compute_flow(
        frames, config.flow_algorithm, num_workers=num_flow_workers)
  return outputs


def too_short_for_flow_reason(num_frames: int, fps: float) -> str:
  """Says why a video of `num_frames` frames at `fps` has no optical flow."""
  return (f"too short for optical flow: {num_frames} frame(s) at {fps:g} fps, "
          "flow needs at least 2")


@dataclasses.dataclass(frozen=True)
class EncodedVideo:
  """A preprocessed video as JPEG frames (see `encode_video`).

  Attributes:
    frames: stream name -> one JPEG per frame.
    height: frame height in pixels.
    width: frame width in pixels.
  """
  frames: dict[str, list[bytes]]
  height: int
  width: int

  @property
  def num_frames(self) -> int:
    """Frames per stream (every stream has one per video frame)."""
    return len(next(iter(self.frames.values())))


def encode_rgb_jpeg(frame: np.ndarray) -> bytes:
  """JPEG-encodes a uint8 RGB frame (H, W, 3)."""
  ok, data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                          [cv2.IMWRITE_JPEG_QUALITY, RGB_JPEG_QUALITY])
  assert ok, "JPEG encoding of a uint8 image does not fail"
  return data.tobytes()


def encode_flow_jpeg(flow_frame: np.ndarray) -> bytes:
  """JPEG-encodes a model-range flow frame (H, W, 2) as an 8-bit gray image.

  The image is (2H, W): x above y, in one channel so that no chroma
  subsampling mixes the two; values are quantised with FLOW_JPEG_SCALE and
  FLOW_JPEG_ZERO.
  """
  quantised = np.clip(np.round(flow_frame * FLOW_JPEG_SCALE + FLOW_JPEG_ZERO),
                      0, 255).astype(np.uint8)
  stacked = np.concatenate([quantised[..., 0], quantised[..., 1]], axis=0)
  ok, data = cv2.imencode(".jpg", stacked,
                          [cv2.IMWRITE_JPEG_QUALITY, FLOW_JPEG_QUALITY])
  assert ok, "JPEG encoding of a uint8 image does not fail"
  return data.tobytes()


def encode_video(path: str, streams: Sequence[str],
                 config: PreprocessConfig) -> EncodedVideo:
  """Decodes a video once and JPEG-encodes the streams asked for.

  Frames are processed one at a time, so memory holds the JPEGs, not the
  decoded video. Runs without TensorFlow, in dataset worker processes.

  Args:
    path: a video file.
    streams: a subset of ("rgb", "flow").
    config: the preprocessing settings.

  Returns:
    The encoded frames (see `encode_rgb_jpeg` and `encode_flow_jpeg`).

  Raises:
    VideoError: if the file cannot be decoded, or is too short for flow.
  """
  streams = validate_streams(streams)
  frames = iter_frames(path, config.fps, config.short_side, config.max_frames)
  first_frames = list(itertools.islice(frames, 2))
  if "flow" in streams and len(first_frames) < 2:
    raise VideoError(path, too_short_for_flow_reason(len(first_frames),
                                                     config.fps))
  encoded = {stream: [] for stream in streams}

  def frames_encoding_rgb() -> Iterator[np.ndarray]:
    for frame in itertools.chain(first_frames, frames):
      if "rgb" in streams:
        encoded["rgb"].append(encode_rgb_jpeg(frame))
      yield frame

  if "flow" in streams:
    for flow_frame in flow.iter_flow(frames_encoding_rgb(),
                                     config.flow_algorithm):
      encoded["flow"].append(encode_flow_jpeg(flow_frame))
  else:
    collections.deque(frames_encoding_rgb(), maxlen=0)
  height, width = first_frames[0].shape[:2]
  return EncodedVideo(encoded, height, width)


def crop_offsets(height: int, width: int, crop_size: int,
                 num_crops: int = 1) -> list[tuple[int, int]]:
  """Returns the (top, left) corners of evaluation crops.

  Args:
    height: frame height.
    width: frame width.
    crop_size: side of the square crop.
    num_crops: 1 for the centre crop; 3 for crops at the start, centre and end
      of the longer side (centred along the shorter side).

  Returns:
    `num_crops` (top, left) pairs.

  Raises:
    ValueError: if the crop does not fit or `num_crops` is not 1 or 3.
  """
  if crop_size > min(height, width):
    raise ValueError(
        f"crop {crop_size} does not fit in {height}x{width} frames; "
        "use a larger short_side or a smaller crop_size")
  top, left = (height - crop_size) // 2, (width - crop_size) // 2
  if num_crops == 1:
    return [(top, left)]
  if num_crops == 3:
    if width >= height:
      return [(top, 0), (top, left), (top, width - crop_size)]
    return [(0, left), (top, left), (height - crop_size, left)]
  raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")


def load_clip(path: str,
              streams: Sequence[str] = STREAMS,
              config: PreprocessConfig = PreprocessConfig(),
              crop_size: int = 224,
              num_flow_workers: int = 1) -> dict[str, np.ndarray]:
  """Preprocesses a video for inference: the whole clip, centre-cropped.

  The number of frames is limited by `config.max_frames` (DeepMind tests on up
  to 250 frames).

  Args:
    path: a video file.
    streams: a subset of ("rgb", "flow").
    config: the preprocessing settings.
    crop_size: side of the centre crop; at most `config.short_side`.
    num_flow_workers: processes for the optical flow.

  Returns:
    A dict with "rgb": float32 (T, crop, crop, 3) and/or "flow": float32
    (T, crop, crop, 2), both in [-1, 1].

  Raises:
    VideoError: if the file cannot be decoded, or is too short for flow.
    ValueError: if the crop is larger than `config.short_side`.
  """
  if crop_size > config.short_side:
    raise ValueError(
        f"crop_size {crop_size} is larger than short_side {config.short_side}")
  arrays = preprocess_video(path, streams, config, num_flow_workers)
  height, width = next(iter(arrays.values())).shape[1:3]
  [(top, left)] = crop_offsets(height, width, crop_size)
  return {
      stream: array[:, top:top + crop_size, left:left + crop_size]
      for stream, array in arrays.items()
  }
