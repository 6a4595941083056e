"""Tests for i3d.model and i3d.two_stream."""

import os

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from i3d import model
from i3d import streams as streams_lib
from i3d import two_stream
from tests import testdata

REFERENCE = os.path.join(testdata.REFERENCE, "checkpoints")


def reference_shapes(name: str) -> dict[str, list[int]]:
  return dict(tf.train.list_variables(
      os.path.join(REFERENCE, name, "model.ckpt")))


class VariablesTest(parameterized.TestCase):

  @parameterized.parameters(("rgb", "rgb_scratch"), ("rgb", "rgb_imagenet"),
                            ("flow", "flow_imagenet"), ("flow", "flow_scratch"))
  def test_names_and_shapes_equal_deepmind_checkpoint(self, stream, reference):
    net = two_stream.TwoStreamI3d(400, [stream])
    channels = streams_lib.CHANNELS[stream]
    net({stream: tf.zeros([1, 1, 8, 8, channels])}, is_training=False)
    ours = {v.name.split(":")[0]: v.shape.as_list() for v in net.variables}
    self.assertEqual(ours, reference_shapes(reference))

  def test_batch_norm_has_offset_only(self):
    net = model.InceptionI3d(10)
    net(tf.zeros([1, 1, 8, 8, 3]), is_training=False)
    leaves = {v.name.split(":")[0].rsplit("/", 1)[1] for v in net.variables}
    self.assertEqual(leaves, {"w", "b", "beta", "moving_mean",
                              "moving_variance"})

  def test_trainable_variables_exclude_moving_statistics(self):
    net = model.InceptionI3d(10)
    net(tf.zeros([1, 1, 8, 8, 3]), is_training=False)
    self.assertFalse(any("moving" in v.name for v in net.trainable_variables))
    self.assertLen(net.trainable_variables, 2 * 57 + 2)


class BatchNormTest(absltest.TestCase):

  def test_training_updates_moving_averages_with_decay(self):
    bn = model.BatchNorm()
    x = tf.constant(np.random.RandomState(0).normal(3.0, 2.0, [4, 2, 3, 3, 5]),
                    tf.float32)
    y = bn(x, is_training=True)
    mean = x.numpy().mean(axis=(0, 1, 2, 3))
    var = x.numpy().var(axis=(0, 1, 2, 3))
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.001 * mean, rtol=1e-4)
    np.testing.assert_allclose(bn.moving_variance.numpy(),
                               0.999 + 0.001 * var, rtol=1e-4)
    np.testing.assert_allclose(y.numpy(), (x.numpy() - mean) /
                               np.sqrt(var + 1e-3), atol=1e-4)

  def test_inference_uses_moving_statistics(self):
    bn = model.BatchNorm()
    x = tf.ones([1, 1, 1, 1, 2]) * 5.0
    bn(x, is_training=False)
    bn.moving_mean.assign([1.0, 2.0])
    bn.moving_variance.assign([4.0, 9.0])
    bn.beta.assign([0.5, -0.5])
    y = bn(x, is_training=False).numpy().reshape(-1)
    np.testing.assert_allclose(
        y, [4 / np.sqrt(4.001) + 0.5, 3 / np.sqrt(9.001) - 0.5], rtol=1e-5)
    np.testing.assert_allclose(bn.moving_mean.numpy(), [1.0, 2.0])


class InceptionI3dTest(parameterized.TestCase):

  def test_mixed_5b_keeps_deepmind_odd_name(self):
    net = model.InceptionI3d(10)
    net(tf.zeros([1, 1, 8, 8, 3]), is_training=False)
    names = [v.name for v in net.variables]
    self.assertTrue(any("Mixed_5b/Branch_2/Conv3d_0a_3x3/" in n for n in names))
    self.assertFalse(any("Mixed_5b/Branch_2/Conv3d_0b_3x3/" in n
                         for n in names))
    self.assertTrue(any("Mixed_5c/Branch_2/Conv3d_0b_3x3/" in n for n in names))

  @parameterized.parameters((1, 8), (4, 32), (9, 64), (16, 112))
  def test_small_inputs_give_logits(self, frames, size):
    net = model.InceptionI3d(7)
    logits, end_points = net(tf.random.uniform([2, frames, size, size, 3]),
                             is_training=False)
    self.assertEqual(logits.shape, (2, 7))
    self.assertTrue(np.isfinite(logits.numpy()).all())
    self.assertEqual(end_points["Mixed_5c"].shape[-1], 1024)

  def test_endpoint_shapes_at_224(self):
    net = model.InceptionI3d(10, final_endpoint="Mixed_5c")
    out, end_points = net(tf.zeros([1, 16, 224, 224, 3]), is_training=False)
    self.assertEqual(out.shape, (1, 2, 7, 7, 1024))
    self.assertEqual(end_points["Conv3d_1a_7x7"].shape, (1, 8, 112, 112, 64))
    self.assertEqual(end_points["MaxPool3d_4a_3x3"].shape, (1, 4, 14, 14, 480))
    self.assertNotIn("Logits", end_points)
    with self.assertRaisesRegex(ValueError, "before Logits"):
      net.head(out, is_training=False)

  def test_pool_is_original_window_at_224_and_clipped_below(self):
    features = tf.random.uniform([1, 4, 7, 7, 3])
    np.testing.assert_allclose(
        model.InceptionI3d.pool(features).numpy(),
        tf.nn.avg_pool3d(features, [1, 2, 7, 7, 1], [1] * 5, "VALID").numpy(),
        rtol=1e-6)
    small = tf.random.uniform([1, 1, 2, 3, 3])
    np.testing.assert_allclose(
        model.InceptionI3d.pool(small).numpy().reshape(-1),
        small.numpy().mean(axis=(1, 2, 3)).reshape(-1), rtol=1e-6)

  def test_pool_with_dynamic_time(self):
    features = tf.random.uniform([1, 3, 2, 2, 4])
    pool = tf.function(model.InceptionI3d.pool, input_signature=[
        tf.TensorSpec([None, None, 2, 2, 4])])
    np.testing.assert_allclose(pool(features).numpy(),
                               model.InceptionI3d.pool(features).numpy())
    np.testing.assert_allclose(pool(features[:, :1]).numpy(),
                               features[:, :1].numpy().mean(axis=(2, 3),
                                                            keepdims=True),
                               rtol=1e-6)

  @parameterized.parameters(((8, 10), (2, 4)), ((9, 11), (3, 5)),
                            ((2, 7), (1, 1)), ((2, 9), (1, 3)))
  def test_pool_with_dynamic_frame_size(self, size, pooled):
    # Map sizes at, above and below the 7x7 window, and one of each.
    features = tf.random.uniform([1, 3, *size, 4], seed=size[0])
    pool = tf.function(model.InceptionI3d.pool, input_signature=[
        tf.TensorSpec([None, None, None, None, 4])])
    dynamic = pool(features).numpy()
    np.testing.assert_allclose(dynamic, model.InceptionI3d.pool(features),
                               rtol=1e-5, atol=1e-6)
    self.assertEqual(dynamic.shape[2:4], pooled)

  def test_uncropped_frames_average_the_logits_of_every_position(self):
    # An uncropped 256x340 clip (as ../shared/cases/full_frame_256x340.npy)
    # leaves 2x5 positions where a 224x224 crop leaves one.
    self.assertEqual(model.InceptionI3d.logits_positions(224, 224), (1, 1))
    self.assertEqual(model.InceptionI3d.logits_positions(112, 160), (1, 1))
    self.assertEqual(model.InceptionI3d.logits_positions(256, 340), (2, 5))
    net = model.InceptionI3d(6)
    clip = tf.random.uniform([1, 4, 256, 340, 3], -1, 1, seed=3)
    logits, _ = net(clip, is_training=False)
    per_position = net.logits(net.pool(net.features(clip, is_training=False)),
                              is_training=False)
    self.assertEqual(per_position.shape[2:4], (2, 5))
    np.testing.assert_allclose(
        logits, tf.reduce_mean(per_position, axis=[1, 2, 3]), rtol=1e-5,
        atol=1e-5)
    any_size = tf.function(lambda x: net(x, is_training=False)[0],
                           input_signature=[tf.TensorSpec([None] * 4 + [3])])
    np.testing.assert_allclose(any_size(clip), logits, rtol=1e-4, atol=1e-5)

  def test_predictions_are_softmax_of_logits(self):
    net = model.InceptionI3d(5, final_endpoint="Predictions")
    predictions, end_points = net(tf.random.uniform([1, 2, 16, 16, 3]),
                                  is_training=False)
    np.testing.assert_allclose(predictions.numpy(),
                               tf.nn.softmax(end_points["Logits"]).numpy())

  def test_invalid_endpoint(self):
    with self.assertRaisesRegex(ValueError, "Unknown final endpoint"):
      model.InceptionI3d(final_endpoint="Mixed_6a")

  def test_dropout_only_in_training(self):
    net = model.InceptionI3d(5)
    x = tf.random.uniform([1, 2, 16, 16, 3])
    # The head alone (batch norm, which is_training also switches, is before
    # it), on unit-scale features: a random network's own are tiny.
    pooled = tf.random.normal(
        net.pool(net.features(x, is_training=False)).shape, seed=0)
    undropped = net.head(pooled, is_training=False).numpy()
    # Not in evaluation, whatever the keep probability.
    np.testing.assert_array_equal(
        net.head(pooled, is_training=False, dropout_keep_prob=0.5).numpy(),
        undropped)
    np.testing.assert_array_equal(
        net.head(pooled, is_training=True, dropout_keep_prob=1.0).numpy(),
        undropped)
    # In training it drops half of the 1024 features: other logits each time.
    dropped = [net.head(pooled, is_training=True, dropout_keep_prob=0.5).numpy()
               for _ in range(2)]
    scale = np.abs(undropped).max()
    self.assertGreater(np.abs(dropped[0] - undropped).max(), 0.1 * scale)
    self.assertGreater(np.abs(dropped[0] - dropped[1]).max(), 0.1 * scale)


class TwoStreamTest(absltest.TestCase):

  def test_joint_is_sum_of_streams(self):
    net = two_stream.TwoStreamI3d(4)
    inputs = {"rgb": tf.random.uniform([2, 2, 16, 16, 3], -1, 1),
              "flow": tf.random.uniform([2, 2, 16, 16, 2], -1, 1)}
    logits = net(inputs, is_training=False)
    np.testing.assert_allclose(logits["joint"].numpy(),
                               (logits["rgb"] + logits["flow"]).numpy(),
                               rtol=1e-6)



if __name__ == "__main__":
  absltest.main()
