"""Optical flow for the I3D flow stream.

DeepMind's Kinetics flow inputs are TV-L1 flow between consecutive grayscale
frames at the model's scale, each channel (x, y) clipped to [-20, 20] pixels and
divided by 20. The Kinetics flow weights expect TV-L1; "dis" (OpenCV's Dense
Inverse Search, medium preset) is about 100x faster and gives similar fields
on clean motion, but a model fine-tuned on it sees different statistics.

One flow frame per RGB frame: flow frame t is the motion from frame t to frame
t + 1, and the last frame, which has no successor, repeats the flow before it.

This module depends on OpenCV and NumPy only (no TensorFlow).
"""

import concurrent.futures
import multiprocessing
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

FLOW_ALGORITHMS: tuple[str, ...] = ("tvl1", "dis")
# Flow beyond this many pixels per frame is clipped (DeepMind's bound).
FLOW_BOUND_PX = 20.0

FlowEstimator = Callable[[np.ndarray, np.ndarray], np.ndarray]


def use_one_opencv_thread() -> None:
  """Limits OpenCV to one thread: worker processes are the unit of parallelism.

  Without it every worker process would also start a thread per core, and
  N workers would fight over the cores with N x cores threads.
  """
  cv2.setNumThreads(1)


def worker_context() -> multiprocessing.context.BaseContext:
  """The multiprocessing context of the OpenCV worker processes.

  "spawn", not "fork": forking a process whose TensorFlow or OpenCV threads
  hold locks can deadlock the children. Each spawned worker re-imports the
  main script, so a pool starts in well under a second under a light script
  (prepare_data.py) but takes seconds when the script imports TensorFlow.
  """
  return multiprocessing.get_context("spawn")


def worker_pool(num_workers: int, one_opencv_thread: bool = True
                ) -> concurrent.futures.ProcessPoolExecutor:
  """A pool of `num_workers` OpenCV worker processes.

  The processes are spawned (see `worker_context`): the one pool of the
  optical flow and of the cache's video encoding.

  Args:
    num_workers: processes.
    one_opencv_thread: each worker uses one OpenCV thread (see
      `use_one_opencv_thread`), for tasks of equal size; False keeps OpenCV's
      thread per core, so that when fewer tasks than cores are left running
      (tasks of unequal size) they take the idle cores.
  """
  return concurrent.futures.ProcessPoolExecutor(
      num_workers, mp_context=worker_context(),
      initializer=use_one_opencv_thread if one_opencv_thread else None)


def create_flow_estimator(algorithm: str = "tvl1") -> FlowEstimator:
  """Returns a function computing model-range flow between two gray frames.

  Args:
    algorithm: "tvl1" (TV-L1, what the Kinetics flow weights expect) or "dis"
      (Dense Inverse Search, medium preset: fast).

  Returns:
    A function (previous, next) -> float32 (H, W, 2), where previous and next
    are uint8 (H, W) grayscale frames and channel 0 is the x (rightward)
    displacement, channel 1 the y (downward) one, both clipped to
    [-FLOW_BOUND_PX, FLOW_BOUND_PX] and divided by FLOW_BOUND_PX.

  Raises:
    ValueError: if the algorithm is unknown.
  """
  if algorithm == "tvl1":
    estimator = cv2.optflow.DualTVL1OpticalFlow_create()
  elif algorithm == "dis":
    estimator = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
  else:
    raise ValueError(
        f"unknown flow algorithm {algorithm!r}; expected one of "
        f"{', '.join(FLOW_ALGORITHMS)}")

  def estimate(previous: np.ndarray, following: np.ndarray) -> np.ndarray:
    displacement = estimator.calc(previous, following, None)
    return np.clip(displacement, -FLOW_BOUND_PX, FLOW_BOUND_PX) / FLOW_BOUND_PX

  return estimate


def iter_flow(frames_uint8_rgb: Iterable[np.ndarray],
              algorithm: str = "tvl1") -> Iterator[np.ndarray]:
  """Computes flow lazily, one flow frame per RGB frame (the last repeated).

  Memory stays at two frames, so long videos can be streamed.

  Args:
    frames_uint8_rgb: uint8 RGB frames (H, W, 3), at least two.
    algorithm: one of FLOW_ALGORITHMS.

  Yields:
    float32 (H, W, 2) flow frames in [-1, 1]: flow t is the motion from frame t
    to frame t + 1; the final one repeats the flow into the last frame.

  Raises:
    ValueError: if fewer than two frames are given or the algorithm is unknown.
  """
  estimate = create_flow_estimator(algorithm)
  previous_gray = None
  latest_flow = None
  for frame in frames_uint8_rgb:
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if previous_gray is not None:
      latest_flow = estimate(previous_gray, gray)
      yield latest_flow
    previous_gray = gray
  if latest_flow is None:
    raise ValueError("optical flow needs at least 2 frames")
  # The last frame has no successor; repeating the last motion keeps the
  # stream the same length as RGB without inventing a still frame.
  yield latest_flow


def _flow_of_chunk(frames_uint8_rgb: np.ndarray, algorithm: str) -> np.ndarray:
  """Returns `iter_flow` of the frames as one array (a worker task)."""
  return np.stack(list(iter_flow(frames_uint8_rgb, algorithm)))


def compute_flow(frames_uint8_rgb: np.ndarray,
                 algorithm: str = "tvl1",
                 num_workers: int = 1) -> np.ndarray:
  """Computes the flow stream of a clip.

  Args:
    frames_uint8_rgb: uint8 RGB frames, shape (T, H, W, 3), T >= 2.
    algorithm: one of FLOW_ALGORITHMS ("tvl1" for the Kinetics flow weights).
    num_workers: processes sharing the frame pairs; 1 computes in this process
      (with OpenCV's own threading). Workers use one OpenCV thread each.

  Returns:
    float32 (T, H, W, 2) in [-1, 1]: flow t is the motion from frame t to
    t + 1 (x then y, pixels / 20 after clipping to +-20), and flow T - 1
    repeats flow T - 2.

  Raises:
    ValueError: for a wrong shape or dtype, fewer than 2 frames, or an unknown
      algorithm.
  """
  frames = np.asarray(frames_uint8_rgb)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(
        f"expected uint8 frames of shape (T, H, W, 3), got {frames.dtype} "
        f"{frames.shape}")
  if len(frames) < 2:
    raise ValueError(f"optical flow needs at least 2 frames, got {len(frames)}")
  create_flow_estimator(algorithm)  # Fails fast on an unknown algorithm.
  num_workers = min(num_workers, len(frames) - 1)
  if num_workers <= 1:
    return _flow_of_chunk(frames, algorithm)
  # Contiguous chunks of frame pairs; neighbouring chunks share one frame so
  # that every pair is computed exactly once.
  bounds = np.linspace(0, len(frames) - 1, num_workers + 1).round().astype(int)
  chunks = [
      frames[start:end + 1] for start, end in zip(bounds[:-1], bounds[1:])
  ]
  with worker_pool(num_workers) as pool:
    parts = list(pool.map(_flow_of_chunk, chunks, [algorithm] * len(chunks)))
  # Each chunk ends with its repeated last flow; only the final chunk keeps it.
  return np.concatenate([part[:-1] for part in parts[:-1]] + [parts[-1]])
