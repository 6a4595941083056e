"""DeepMind's I3D preprocessing: the one path from a video file to model inputs.

The recipe follows the kinetics-i3d README: frames sampled at 25 fps, the
shorter side resized to 256 px with the aspect ratio kept (decoding in
`i3d.video.io`), RGB scaled to [-1, 1], optical flow (TV-L1 by default, see
`i3d.video.flow`) clipped to [-20, 20] and scaled to [-1, 1], and a 224 x 224
crop (random for training, centred for evaluation).

Inference reads a file whole (`load_clip`) or streamed frame by frame
(`iter_model_frames`); the prepared cache stores the same frames as JPEGs
(`encode_video`, run in `i3d.data.cache`'s worker processes).

This module depends on OpenCV and NumPy only (no TensorFlow), so that worker
processes which decode videos start quickly.
"""

import collections
import dataclasses
import itertools
from typing import Deque, Dict, Iterator, Sequence

import cv2
import numpy as np

from i3d import config as config_lib
from i3d import streams as streams_lib
from i3d.video import flow
from i3d.video import io

# The settings live with every other setting in `i3d.config`; here is their
# use.
PreprocessConfig = config_lib.PreprocessConfig


def check_crop_fits(crop_size: int, short_side: int) -> None:
  """Checks that a square crop fits in frames whose shorter side is given.

  The one check of the crop size against the frames, for inference inputs
  (`load_clip`, `iter_model_frames`), evaluation crops (`crop_offsets`) and
  the prepared cache (`i3d.data.pipeline`).

  Args:
    crop_size: side of the square crop, in pixels.
    short_side: the frames' shorter side, in pixels.

  Raises:
    ValueError: if the crop is larger than the shorter side.
  """
  if crop_size > short_side:
    raise ValueError(
        f"crop_size {crop_size} does not fit: it is larger than short_side "
        f"{short_side} of the frames; use a larger short_side or a smaller "
        "crop_size")


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
  check_crop_fits(crop_size, min(height, width))
  top, left = (height - crop_size) // 2, (width - crop_size) // 2
  if num_crops == 1:
    return [(top, left)]
  if num_crops == 3:
    if width >= height:
      return [(top, 0), (top, left), (top, width - crop_size)]
    return [(0, left), (top, left), (height - crop_size, left)]
  raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")


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


# DeepMind tests on clips of up to 250 frames (10 s at 25 fps). A longer input
# is classified as consecutive clips of this many frames (`clip_windows` with
# the stride equal to the window), their logits averaged as multi-clip
# testing does, so that memory does not grow with the input's length.
MAX_CLIP_FRAMES = 250


def clip_windows(num_frames: int, window: int,
                 stride: int) -> list[tuple[int, int]]:
  """Frame ranges of windows of `window` frames, every `stride`, covering all.

  When the last regular window stops short of the end, one more window is
  aligned to the end, so every frame is in some window and all windows have
  the same length. A video no longer than a window gives one window over all
  its frames.

  Args:
    num_frames: frames in the video, at least 1.
    window: frames per window, at least 1.
    stride: frames between window starts, from 1 to `window`.

  Returns:
    `(start, end)` frame index ranges, `end` exclusive, in increasing order.

  Raises:
    ValueError: for a count, window or stride out of range.
  """
  if num_frames < 1:
    raise ValueError(f"num_frames must be at least 1, got {num_frames}")
  if not 1 <= stride <= window:
    raise ValueError(f"need 1 <= stride <= window, got stride {stride} and "
                     f"window {window}")
  if num_frames <= window:
    return [(0, num_frames)]
  windows = [(start, start + window)
             for start in range(0, num_frames - window + 1, stride)]
  if windows[-1][1] < num_frames:
    windows.append((num_frames - window, num_frames))
  return windows


def too_short_for_flow_reason(video_frames: int, fps: float) -> str:
  """Says why a video of `video_frames` frames at `fps` has no optical flow."""
  return (f"too short for optical flow: {video_frames} frame(s) at {fps:g} fps, "
          "flow needs at least 2")


def preprocess_video(
    path: str,
    streams: Sequence[str] = streams_lib.STREAMS,
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
  streams = streams_lib.parse_streams(streams)
  frames = io.read_video(path, config.fps, config.short_side, config.max_frames)
  outputs = {}
  if "rgb" in streams:
    outputs["rgb"] = rgb_to_model(frames)
  if "flow" in streams:
    if len(frames) < 2:
      raise io.VideoError(path,
                          too_short_for_flow_reason(len(frames), config.fps))
    outputs["flow"] = flow.compute_flow(
        frames, config.flow_algorithm, num_workers=num_flow_workers)
  return outputs


def load_clip(path: str,
              streams: Sequence[str] = streams_lib.STREAMS,
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
  check_crop_fits(crop_size, config.short_side)
  arrays = preprocess_video(path, streams, config, num_flow_workers)
  height, width = next(iter(arrays.values())).shape[1:3]
  [(top, left)] = crop_offsets(height, width, crop_size)
  return {
      stream: array[:, top:top + crop_size, left:left + crop_size]
      for stream, array in arrays.items()
  }


def iter_model_frames(path: str, streams: Sequence[str],
                      preprocess: PreprocessConfig,
                      crop_size: int) -> Iterator[Dict[str, np.ndarray]]:
  """Decodes a video lazily into centre-cropped model inputs, frame by frame.

  The streamed twin of `load_clip` (same frames, crop and values): only two
  full-size frames (for the flow) are held at a time, so any length fits in
  memory (sliding-window classification).

  Args:
    path: a video file.
    streams: a subset of ("rgb", "flow").
    preprocess: the preprocessing settings.
    crop_size: side of the centre crop; at most `preprocess.short_side`.

  Yields:
    {stream: float32 (crop, crop, C) in [-1, 1]} per frame.

  Raises:
    VideoError: if the file cannot be decoded or is too short for flow.
  """
  check_crop_fits(crop_size, preprocess.short_side)
  frames = io.iter_frames(path, preprocess.fps, preprocess.short_side,
                          preprocess.max_frames)
  # iter_frames yields at least one frame or raises.
  first = list(itertools.islice(frames, 2))
  [(top, left)] = crop_offsets(*first[0].shape[:2], crop_size)

  def crop(frame: np.ndarray) -> np.ndarray:
    return frame[top:top + crop_size, left:left + crop_size]

  frames = itertools.chain(first, frames)
  if "flow" not in streams:
    for frame in frames:
      yield {"rgb": rgb_to_model(crop(frame))}
    return
  if len(first) < 2:
    raise io.VideoError(
        path, too_short_for_flow_reason(len(first), preprocess.fps))
  # Flow t, the motion from frame t to t + 1, comes once frame t + 1 is read:
  # frames wait here for their flow.
  waiting: Deque[np.ndarray] = collections.deque()

  def remembered() -> Iterator[np.ndarray]:
    for frame in frames:
      waiting.append(frame)
      yield frame

  for flow_frame in flow.iter_flow(remembered(), preprocess.flow_algorithm):
    frame = waiting.popleft()
    inputs = {"flow": crop(flow_frame)}
    if "rgb" in streams:
      inputs["rgb"] = rgb_to_model(crop(frame))
    yield inputs


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
  def video_frames(self) -> int:
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
  streams = streams_lib.parse_streams(streams)
  frames = io.iter_frames(path, config.fps, config.short_side, config.max_frames)
  first_frames = list(itertools.islice(frames, 2))
  if "flow" in streams and len(first_frames) < 2:
    raise io.VideoError(path, too_short_for_flow_reason(len(first_frames),
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
