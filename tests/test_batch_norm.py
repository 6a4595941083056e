"""Tests for i3d.train.batch_norm and the flow stream it makes work (issue 10)."""

import os

from absl.testing import absltest
import numpy as np
import pytest
import tensorflow as tf

from i3d import checkpoints
from i3d import config as config_lib
from i3d import kinetics_weights
from i3d import model as i3d_model
from i3d.data import cache as data_cache
from i3d.data import pipeline as data_pipeline
from i3d.data import sources as data_sources
from i3d.eval import evaluate as evaluation
from i3d.eval import runs as eval_runs
from i3d.train import batch_norm
from i3d.train import loop as train_loop
from tests import testdata

ROOT = testdata.ROOT
FIRST_NORM = "Flow/inception_i3d/Conv3d_1a_7x7/batch_norm/"

# The same textured square moves side to side or up and down, at several
# speeds: video i of both classes has the same texture, so only the motion
# tells them apart.
MOTIONS = {"side": [(2, 0), (-1, 0), (1, 0), (-2, 0)],
           "updown": [(0, 2), (0, -1), (0, 1), (0, -2)]}


def flow_model() -> i3d_model.InceptionI3d:
  model = i3d_model.InceptionI3d(3)
  checkpoints.ensure_built(model, 2)
  return model


def random_clips(seed: int, *sizes: int) -> list[tf.Tensor]:
  rng = np.random.RandomState(seed)
  return [tf.constant(rng.normal(0.0, 0.05, (size, 4, 16, 16, 2)),
                      tf.float32) for size in sizes]


class EstimateStatisticsTest(absltest.TestCase):

  def test_statistics_are_the_moments_over_all_clips(self):
    model = flow_model()
    clips = random_clips(0, 2, 1)
    tensors = batch_norm.estimate_statistics(model, "flow", clips)
    kernel = checkpoints.variable_map(model, "Flow")[
        "Flow/inception_i3d/Conv3d_1a_7x7/conv_3d/w"]
    conv = tf.nn.conv3d(tf.concat(clips, 0), kernel, [1, 2, 2, 2, 1],
                        "SAME").numpy().astype(np.float64)
    np.testing.assert_allclose(tensors[FIRST_NORM + "moving_mean"],
                               conv.mean(axis=(0, 1, 2, 3)), rtol=1e-4,
                               atol=1e-7)
    np.testing.assert_allclose(tensors[FIRST_NORM + "moving_variance"],
                               conv.var(axis=(0, 1, 2, 3)), rtol=1e-3,
                               atol=1e-9)

  def test_reestimate_changes_only_the_statistics(self):
    model = flow_model()
    before = {n: v.numpy() for n, v in
              checkpoints.variable_map(model, "Flow").items()}
    batch_norm.reestimate_statistics(model, "flow", random_clips(1, 2))
    after = {n: v.numpy() for n, v in
             checkpoints.variable_map(model, "Flow").items()}
    statistics = [n for n in before if n.endswith(("moving_mean",
                                                   "moving_variance"))]
    self.assertLen(statistics, 2 * len(batch_norm.batch_norms(model)))
    for name in before:
      if name in statistics:
        self.assertFalse(np.array_equal(before[name], after[name]), name)
      else:
        np.testing.assert_array_equal(before[name], after[name], name)

  def test_no_clips_is_an_error(self):
    with self.assertRaisesRegex(ValueError, "No clips"):
      batch_norm.estimate_statistics(flow_model(), "flow", [])


def relative_distance(a: np.ndarray, b: np.ndarray) -> float:
  return float(np.linalg.norm(a - b) /
               ((np.linalg.norm(a) + np.linalg.norm(b)) / 2))


@pytest.mark.slow
class FlowFromRgbTest(absltest.TestCase):
  """A flow stream initialised from the Kinetics RGB weights sees motion."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = testdata.class_tempdir(cls)
    cls.classes = tuple(MOTIONS)
    cls.cache_dir = testdata.prepare_direction_cache(
        cls.root, cls.classes, videos_per_class=8, motions=MOTIONS)
    cls.rgb_checkpoint = kinetics_weights.fetch_rgb_scratch(
        os.path.join(ROOT, "checkpoints"))

  def config(self, **overrides) -> config_lib.TrainConfig:
    values = dict(cache_dir=self.cache_dir,
                  train_dir=self.create_tempdir().full_path,
                  classes=self.classes, stream="flow", num_frames=8,
                  crop_size=32, batch_size=4, trainable="logits",
                  learning_rate=0.01, lr_schedule="constant", num_steps=120,
                  checkpoint_every=1000, eval_every=1000, log_every=40,
                  feature_views=8, dropout_keep_prob=1.0,
                  # Clips of the training length: on these 1x1-pixel
                  # Mixed_5c maps a longer clip changes what the 3x3x3
                  # convolutions' padding lets through.
                  eval_num_frames=8,
                  rgb_checkpoint=self.rgb_checkpoint, export=False)
    values.update(overrides)
    return config_lib.TrainConfig(**values)

  def test_frozen_flow_features_differ_with_the_motion(self):
    # The frozen trunk's features of the same square moving side to side vs
    # up and down, compared with the RGB stream's features of those clips:
    # RGB sees the same texture at other places, flow sees other motion.
    trainer = train_loop.Trainer(self.config(stream="joint"))
    info = data_cache.read_cache(self.cache_dir)
    features = {}
    for split in data_sources.SPLITS:
      entries = info.split_entries(split)
      for element in data_pipeline.make_eval_dataset(self.cache_dir, split,
                                               num_frames=8, crop_size=32):
        name = os.path.basename(entries[int(element["index"])].path)
        features[os.path.splitext(name)[0]] = {
            s: stage.frozen(element[s]).numpy()
            for s, stage in trainer.stages.items()}
    distances = {s: np.mean([relative_distance(features[f"side_{i}"][s],
                                               features[f"updown_{i}"][s])
                             for i in range(8)])
                 for s in ("rgb", "flow")}
    self.assertGreater(distances["flow"], 2.0 * distances["rgb"], distances)

  def test_flow_only_model_separates_the_motions(self):
    trainer = train_loop.Trainer(self.config())
    trainer.train()
    # All 16 videos (12 trained on, 4 held out): chance is 0.5, and with the
    # RGB checkpoint's statistics the model says one class for all (0.5).
    metrics = evaluation.evaluate_model(trainer.model, trainer.config,
                                     split=None).metrics
    self.assertEqual(metrics["num_videos"], 16)
    self.assertGreaterEqual(metrics["top1"], 0.8, metrics)
    # The re-estimated statistics are in the training checkpoint, which
    # evaluate.py, predict.py and the exports read.
    config_lib.save_config(trainer.config)
    restored, _ = eval_runs.load_trained_model(trainer.config.train_dir)
    rgb = checkpoints.read_checkpoint(self.rgb_checkpoint)
    saved = checkpoints.variable_map(restored.streams["flow"], "Flow")
    for name, variable in checkpoints.variable_map(
        trainer.model.streams["flow"], "Flow").items():
      np.testing.assert_array_equal(saved[name].numpy(), variable.numpy())
    mean = saved[FIRST_NORM + "moving_mean"].numpy()
    self.assertFalse(np.allclose(
        mean, rgb["RGB/inception_i3d/Conv3d_1a_7x7/batch_norm/moving_mean"]
        .reshape(mean.shape)))

  def test_a_flow_checkpoint_keeps_its_own_statistics(self):
    flow_checkpoint = checkpoints.write_random_checkpoint(
        self.create_tempdir().full_path, "flow", seed=3)
    trainer = train_loop.Trainer(self.config(flow_checkpoint=flow_checkpoint))
    tensors = checkpoints.read_checkpoint(flow_checkpoint)
    variables = checkpoints.variable_map(trainer.model.streams["flow"],
                                         "Flow")
    statistics = [n for n in tensors if n.endswith(("moving_mean",
                                                    "moving_variance"))]
    self.assertLen(statistics, 114)
    for name in statistics:
      np.testing.assert_array_equal(variables[name].numpy(),
                                    tensors[name].reshape(-1), name)


if __name__ == "__main__":
  absltest.main()
