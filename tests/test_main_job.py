"""The main job end to end: `train.py --flagfile=configs/demo.cfg`.

Generates the synthetic dataset, prepares it, trains the joint model from the
Kinetics weights and evaluates it on held-out subjects: the mission's proof.
About 13 minutes on 2 cores (AVX2, oneDNN on).
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

  def test_demo_reaches_60_percent_on_held_out_subjects(self):
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
      self.assertEqual(metrics["num_videos"], 80)
      self.assertLen(metrics["classes"], 10)
      # Held-out subjects of the domain-randomised generator (v4): new bodies
      # in new rooms, filmed from new angles, some cut or tiny in the frame.
      # On 2026-12-01: joint 72.5%, RGB 71.25%, flow 37.5% (chance 10%). On
      # the clean side views of generator v3 the same settings gave 97.5%,
      # 95%, 87.5%, but that model scores 59.5% on v4's clips, against 76.5%
      # for this one on v3's (benchmarks/README.md, "Synthetic transfer").
      self.assertGreaterEqual(metrics["top1"], 0.6, json.dumps(metrics))
      self.assertEqual(set(metrics["streams"]), {"rgb", "flow", "joint"})
      # Both streams carry signal (issue 10): flow alone is well above chance
      # (it was at chance level before its batch-norm statistics were
      # re-estimated on flow clips), and adding it does not cost RGB more
      # than two of the 80 videos (bfloat16 features on CPUs that have them
      # move a video or two).
      streams = {s: metrics["streams"][s]["top1"] for s in metrics["streams"]}
      self.assertGreaterEqual(streams["flow"], 0.25, streams)
      self.assertGreaterEqual(streams["joint"], streams["rgb"] - 0.025,
                              streams)
      self.assertIn("Top-1 accuracy", result.stdout)
      for path in ("export/deepmind_checkpoint/model.ckpt.index",
                   "export/saved_model/saved_model.pb", "config.json"):
        self.assertTrue(os.path.exists(os.path.join(train_dir, path)), path)


if __name__ == "__main__":
  absltest.main()
