"""Tests of i3d.video.flow: direction, scale, ends, parallelism."""

from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import cv2
import numpy as np

from i3d.video import flow

HEIGHT, WIDTH, SQUARE = 96, 128, 24


def moving_square(
    num_frames: int,
    velocity: tuple[int, int],
    seed: int = 0) -> tuple[np.ndarray, list[tuple[slice, slice]]]:
  """A textured square moving at `velocity` (x, y) px/frame on a still texture.

  Returns:
    uint8 RGB frames (num_frames, HEIGHT, WIDTH, 3), and for each frame the
    interior of the square (rows, columns), away from its edges.
  """
  rng = np.random.default_rng(seed)
  coarse = rng.integers(60, 140, (HEIGHT // 8, WIDTH // 8, 3)).astype(np.uint8)
  background = cv2.resize(
      coarse, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
  texture = np.kron(rng.integers(0, 256, (6, 6, 3)),
                    np.ones((4, 4, 1))).astype(np.uint8)
  frames, interiors = [], []
  for t in range(num_frames):
    top = (HEIGHT - SQUARE) // 2 + velocity[1] * t
    left = (WIDTH - SQUARE) // 2 + velocity[0] * t
    frame = background.copy()
    frame[top:top + SQUARE, left:left + SQUARE] = texture
    frames.append(frame)
    interiors.append((slice(top + 6, top + SQUARE - 6),
                      slice(left + 6, left + SQUARE - 6)))
  return np.stack(frames), interiors


class ComputeFlowTest(parameterized.TestCase):

  @parameterized.product(
      algorithm=("tvl1", "dis"), velocity=((3, 0), (-2, 0), (0, 3)))
  def test_flow_follows_the_motion(self, algorithm, velocity):
    frames, interiors = moving_square(5, velocity)
    flows = flow.compute_flow(frames, algorithm)
    self.assertEqual(flows.shape, (5, HEIGHT, WIDTH, 2))
    self.assertEqual(flows.dtype, np.float32)
    self.assertBetween(float(flows.min()), -1.0, 1.0)
    self.assertBetween(float(flows.max()), -1.0, 1.0)
    for t in range(4):
      inside = flows[t][interiors[t]]
      # (x, y) in pixels, divided by the 20 px bound: x > 0 means rightward.
      np.testing.assert_allclose(
          np.median(inside.reshape(-1, 2), axis=0),
          np.array(velocity) / flow.FLOW_BOUND_PX, atol=0.03)
      # The still background far from the square does not move.
      self.assertLess(float(np.abs(flows[t, :16, :16]).mean()), 0.01)

  def test_last_frame_repeats_the_previous_flow(self):
    frames, _ = moving_square(5, (3, 0))
    flows = flow.compute_flow(frames, "dis")
    np.testing.assert_array_equal(flows[-1], flows[-2])
    self.assertFalse(np.array_equal(flows[-2], flows[-3]))

  def test_streaming_and_parallel_match_sequential(self):
    frames, _ = moving_square(6, (3, 0))
    sequential = flow.compute_flow(frames, "dis")
    streamed = np.stack(list(flow.iter_flow(iter(frames), "dis")))
    parallel = flow.compute_flow(frames, "dis", num_workers=2)
    np.testing.assert_array_equal(streamed, sequential)
    np.testing.assert_array_equal(parallel, sequential)

  def test_clips_at_20_px_and_scales(self):
    displacement = np.array([[[40.0, -40.0], [10.0, -5.0]]], np.float32)
    fake = mock.Mock()
    fake.calc.return_value = displacement
    with mock.patch.object(cv2, "DISOpticalFlow_create", return_value=fake):
      estimate = flow.create_flow_estimator("dis")
    gray = np.zeros((1, 2), np.uint8)
    np.testing.assert_allclose(estimate(gray, gray),
                               [[[1.0, -1.0], [0.5, -0.25]]])

  @parameterized.named_parameters(
      ("one_frame", np.zeros((1, 8, 8, 3), np.uint8), "at least 2 frames"),
      ("float", np.zeros((2, 8, 8, 3), np.float32), "expected uint8"),
      ("gray", np.zeros((2, 8, 8), np.uint8), "expected uint8"),
  )
  def test_invalid_frames(self, frames, message):
    with self.assertRaisesRegex(ValueError, message):
      flow.compute_flow(frames)

  def test_unknown_algorithm(self):
    with self.assertRaisesRegex(ValueError, "unknown flow algorithm"):
      flow.compute_flow(np.zeros((2, 8, 8, 3), np.uint8), "farneback")

  def test_too_few_frames_when_streaming(self):
    with self.assertRaisesRegex(ValueError, "at least 2 frames"):
      list(flow.iter_flow(iter(np.zeros((1, 8, 8, 3), np.uint8)), "dis"))


if __name__ == "__main__":
  absltest.main()
