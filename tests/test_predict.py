"""End-to-end tests of predict.py on DeepMind's cricket sample."""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np
import pytest

from i3d import inference

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SAMPLE = os.path.join(ROOT, "..", "shared", "reference", "kinetics-i3d", "data",
                      "v_CricketShot_g04_c01_rgb.gif")
TOP_5 = ["playing cricket", "robot dancing", "pumping fist", "breakdancing",
         "hurling (sport)"]


def run_predict(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, os.path.join(ROOT, "predict.py"),
                         *args], cwd=ROOT, capture_output=True, text=True,
                        check=False)


class ClipLoadingTest(absltest.TestCase):

  def test_gif_sample_decodes_to_model_range(self):
    clip = inference.load_gif_clip(SAMPLE)
    self.assertEqual(clip.shape, (79, 224, 224, 3))
    self.assertBetween(clip.min(), -1.0, -0.9)
    self.assertEqual(clip.max(), 1.0)

  def test_bad_npy_is_a_clear_error(self):
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "bad.npy")
      np.save(path, np.zeros([4, 16, 16], np.float32))
      with self.assertRaisesRegex(inference.ClipError,
                                  f"{path}: expected a .*got shape"):
        inference.load_npy_clip(path)
      np.save(path, np.full([1, 2, 8, 8, 3], 3.0, np.float32))
      with self.assertRaisesRegex(inference.ClipError, r"in \[-1, 1\]"):
        inference.load_npy_clip(path)
      result = run_predict(f"--npy={path}")
      self.assertNotEqual(result.returncode, 0)
      self.assertIn(f"error: {path}", result.stderr)
      self.assertNotIn("Traceback", result.stderr)

  def test_top_k_probabilities(self):
    top = inference.top_k(np.array([1.0, 3.0, 2.0]), ["a", "b", "c"], k=2)
    self.assertEqual([p.label for p in top], ["b", "c"])
    expected = np.exp([3.0, 2.0]) / np.exp([1.0, 2.0, 3.0]).sum()
    np.testing.assert_allclose([p.probability for p in top], expected)


@pytest.mark.slow
class CricketSampleTest(absltest.TestCase):
  """rgb_scratch on DeepMind's preprocessed sample, as evaluate_sample.py."""

  def check_output(self, result, json_path):
    self.assertEqual(result.returncode, 0, result.stderr)
    lines = result.stdout.strip().splitlines()
    self.assertTrue(lines[0].startswith("Norm of logits: 83.241"), lines[0])
    self.assertEqual(lines[2], "Top classes and probabilities")
    self.assertEqual([line.split(" ", 2)[2] for line in lines[3:8]], TOP_5)
    with open(json_path) as f:
      record = json.load(f)
    self.assertAlmostEqual(record["logits_norm"], 83.2417, delta=1e-3)
    self.assertEqual([p["label"] for p in record["top_k"]], TOP_5)
    top = record["top_k"][0]
    self.assertAlmostEqual(top["logit"], 17.6404, delta=1e-4)
    self.assertEqual(top["index"], 227)
    self.assertEqual(set(top), {"label", "index", "logit", "probability"})

  def test_gif_and_npy_give_deepmind_numbers(self):
    with tempfile.TemporaryDirectory() as tmp:
      npy = os.path.join(tmp, "cricket_rgb.npy")
      np.save(npy, inference.load_gif_clip(SAMPLE)[None])
      for flag in (f"--gif={SAMPLE}", f"--npy={npy}"):
        json_path = os.path.join(tmp, "out.json")
        self.check_output(
            run_predict(flag, f"--output_json={json_path}", "--top_k=5"),
            json_path)


if __name__ == "__main__":
  absltest.main()
