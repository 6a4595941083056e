"""The main job end to end: `train.py --flagfile=configs/demo.cfg`.

Generates the synthetic dataset, prepares it, trains the joint model from the
Kinetics weights and evaluates it on held-out subjects: the mission's proof.
About 10 minutes on 2 cores (AVX2, oneDNN on).
"""

import json
import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


@pytest.mark.slow
class MainJobTest(absltest.TestCase):

  def test_demo_reaches_80_percent_on_held_out_subjects(self):
    with tempfile.TemporaryDirectory() as tmp:
      train_dir = os.path.join(tmp, "run")
      result = subprocess.run(
          [sys.executable, os.path.join(ROOT, "train.py"),
           f"--flagfile={os.path.join(ROOT, 'configs', 'demo.cfg')}",
           f"--manifest={os.path.join(tmp, 'synthetic', 'manifest.csv')}",
           f"--cache_dir={os.path.join(tmp, 'cache')}",
           f"--train_dir={train_dir}"],
          cwd=ROOT, capture_output=True, text=True, check=False, timeout=1800)
      self.assertEqual(result.returncode, 0, result.stderr[-3000:])
      with open(os.path.join(train_dir, "eval_metrics.json")) as f:
        metrics = json.load(f)
      self.assertEqual(metrics["num_videos"], 40)
      self.assertLen(metrics["classes"], 10)
      self.assertGreaterEqual(metrics["top1"], 0.8, json.dumps(metrics))
      self.assertEqual(set(metrics["streams"]), {"rgb", "flow", "joint"})
      # Both streams carry signal (issue 10): flow was 32.5% before its
      # batch-norm statistics were re-estimated on flow clips. On 2026-11-30:
      # RGB 95%, flow 87.5%, joint 95% (two runs at the earlier learning
      # rate of 0.05: 97.5%, 85%, 100%).
      streams = {s: metrics["streams"][s]["top1"] for s in metrics["streams"]}
      self.assertGreaterEqual(streams["flow"], 0.8, streams)
      self.assertGreaterEqual(streams["joint"], streams["rgb"], streams)
      self.assertIn("Top-1 accuracy", result.stdout)
      for path in ("export/deepmind_checkpoint/model.ckpt.index",
                   "export/saved_model/saved_model.pb", "config.json"):
        self.assertTrue(os.path.exists(os.path.join(train_dir, path)), path)


if __name__ == "__main__":
  absltest.main()
