"""Tests for i3d.precision: bfloat16 detection and scoped Grappler options."""

import os
import subprocess
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from i3d import checkpoints
from i3d import precision
from i3d import two_stream
from i3d.eval import classify
from tests import testdata

_OPTION = "auto_mixed_precision_onednn_bfloat16"


def write_cpuinfo(directory: str, flags: str) -> str:
  path = os.path.join(directory, "cpuinfo")
  with open(path, "w", encoding="utf-8") as f:
    f.write(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\n"
            f"processor\t: 1\nflags\t\t: {flags}\n")
  return path


class DetectionTest(parameterized.TestCase):

  @parameterized.parameters(
      ("fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni", True),
      ("fpu sse2 avx2 amx_bf16 amx_tile amx_int8", True),
      ("fpu sse2 avx avx2 fma", False),
      ("fpu avx512f avx512bw avx512_fp16", False),
  )
  def test_cpu_flags(self, flags, expected):
    path = write_cpuinfo(self.create_tempdir().full_path, flags)
    self.assertEqual(precision.cpu_has_bfloat16(path), expected)

  def test_unreadable_cpuinfo_means_no_bfloat16(self):
    self.assertFalse(precision.cpu_has_bfloat16(
        os.path.join(tempfile.gettempdir(), "no", "cpuinfo")))

  def test_settings(self):
    self.assertTrue(precision.use_inference_bfloat16("on"))
    self.assertFalse(precision.use_inference_bfloat16("off"))
    self.assertEqual(precision.use_inference_bfloat16("auto"),
                     precision.cpu_has_bfloat16())
    with self.assertRaisesRegex(ValueError, "inference_bfloat16"):
      precision.use_inference_bfloat16("yes")


class OneDnnTest(parameterized.TestCase):
  """Importing i3d before TensorFlow turns TensorFlow's oneDNN kernels on."""

  @parameterized.parameters((None, "True"), ("0", "False"))
  def test_onednn_unless_turned_off(self, setting, expected):
    env = {k: v for k, v in os.environ.items()
           if k != "TF_ENABLE_ONEDNN_OPTS"}
    if setting is not None:
      env["TF_ENABLE_ONEDNN_OPTS"] = setting
    env["PYTHONPATH"] = os.pathsep.join(
        [testdata.ROOT] + ([env["PYTHONPATH"]] if "PYTHONPATH" in env else []))
    code = ("import i3d\n"
            "from tensorflow.python.util import _pywrap_util_port\n"
            "print(_pywrap_util_port.IsMklEnabled())")
    result = subprocess.run([sys.executable, "-c", code], env=env,
                            capture_output=True, text=True, check=True)
    self.assertEqual(result.stdout.split()[-1], expected)


class ScopeTest(absltest.TestCase):

  def test_options_are_restored_also_after_an_exception(self):
    before = tf.config.optimizer.get_experimental_options().get(_OPTION, False)
    with precision.inference_precision(True):
      self.assertTrue(tf.config.optimizer.get_experimental_options()[_OPTION])
    self.assertEqual(
        tf.config.optimizer.get_experimental_options()[_OPTION], before)
    with self.assertRaises(KeyError):
      with precision.grappler_options({_OPTION: True}):
        raise KeyError("inside")
    self.assertEqual(
        tf.config.optimizer.get_experimental_options()[_OPTION], before)

  def test_float32_calls_after_bfloat16_calls_are_float32(self):
    model = two_stream.TwoStreamI3d(3, ("rgb",))
    checkpoints.ensure_built(model.streams["rgb"], 3)
    clips = {"rgb": np.random.default_rng(0).uniform(
        -1, 1, (1, 8, 32, 32, 3)).astype(np.float32)}
    float32 = classify.Classifier(model, ["a", "b", "c"])
    bfloat16 = classify.Classifier(model, ["a", "b", "c"], bfloat16=True)
    reference = float32.logits(clips)["rgb"]
    rewritten = bfloat16.logits(clips)["rgb"]
    # The same function object after the bfloat16 calls, and a new one.
    again = float32.logits(clips)["rgb"]
    fresh = classify.Classifier(model, ["a", "b", "c"]).logits(clips)["rgb"]
    np.testing.assert_array_equal(again, reference)
    np.testing.assert_array_equal(fresh, reference)
    if precision.cpu_has_bfloat16():  # The rewrite ran: the check means it.
      self.assertFalse(np.array_equal(rewritten, reference))
    np.testing.assert_allclose(rewritten, reference, rtol=0.1, atol=0.05)


if __name__ == "__main__":
  absltest.main()
