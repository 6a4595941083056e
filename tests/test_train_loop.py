"""Tests for i3d.train (steps, features, checkpointer, loop) and train.py, on tiny prepared datasets."""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf

from i3d import checkpoints
from i3d import config as config_lib
from i3d import precision
from i3d.data import cache as data_cache
from i3d.data import pipeline as data_pipeline
from i3d.eval import classify
from i3d.eval import evaluate as evaluation
from i3d.eval import runs as eval_runs
from i3d import streams as streams_lib
from i3d.train import checkpointer as train_checkpointer
from i3d.train import features as train_features
from i3d.train import loop as train_loop
from i3d.train import steps as train_steps
from tests import testdata

ROOT = testdata.ROOT
CLASSES = testdata.DIRECTION_CLASSES


def tiny_config(cache_dir: str, train_dir: str, rgb_checkpoint: str,
                **overrides) -> config_lib.TrainConfig:
  values = dict(cache_dir=cache_dir, train_dir=train_dir, classes=CLASSES,
                stream="joint", num_frames=4, crop_size=32, batch_size=2,
                trainable="logits", learning_rate=0.05, lr_schedule="constant",
                dropout_keep_prob=1.0, num_steps=4, checkpoint_every=2,
                eval_every=100, log_every=1, feature_views=2,
                flow_batch_norm_batches=2, rgb_checkpoint=rgb_checkpoint,
                export=False)
  values.update(overrides)
  return config_lib.TrainConfig(**values)


class TinyDataTest(testdata.DirectionCacheTest):
  """A tiny training run's settings over the shared cache."""

  def train_dir(self) -> str:
    return self.create_tempdir().full_path

  def config(self, **overrides) -> config_lib.TrainConfig:
    return tiny_config(self.cache_dir, self.train_dir(), self.rgb_checkpoint,
                       **overrides)


class InitializationTest(TinyDataTest):

  def test_restore_excludes_only_the_logits_and_flow_is_cross_modal(self):
    trainer = train_loop.Trainer(self.config())
    source = checkpoints.read_checkpoint(self.rgb_checkpoint)
    for stream, scope in (("rgb", "RGB"), ("flow", "Flow")):
      names = checkpoints.variable_map(trainer.model.streams[stream], scope)
      for name, variable in names.items():
        rgb_name = "RGB" + name[len(scope):]
        if "/Logits/" in name:
          self.assertEqual(variable.shape[-1], len(CLASSES))
        elif name.endswith("Conv3d_1a_7x7/conv_3d/w") and stream == "flow":
          expected = np.repeat(source[rgb_name].mean(axis=3, keepdims=True),
                               2, axis=3)
          np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-6)
        elif name.endswith(("moving_mean", "moving_variance")) and (
            stream == "flow"):
          # Re-estimated on flow clips (i3d.train.batch_norm).
          self.assertFalse(np.allclose(variable.numpy(), source[rgb_name]),
                           name)
        else:
          np.testing.assert_array_equal(variable.numpy(), source[rgb_name],
                                        err_msg=name)

  def test_init_from_a_run_restores_its_weights_and_logits_if_same_classes(
      self):
    first = train_loop.Trainer(self.config(num_steps=2))
    first.train()
    config_lib.save_config(first.config)
    trained = {name: variable.numpy() for stream, model in
               first.model.streams.items() for name, variable in
               checkpoints.variable_map(model, streams_lib.SCOPES[stream])
               .items()}
    kinetics = train_loop.Trainer(self.config())
    same = train_loop.Trainer(self.config(init_from=first.config.train_dir))
    other = train_loop.Trainer(self.config(
        classes=("up", "right", "left"), init_from=first.config.train_dir))
    for trainer in (same, other):
      for stream, model in trainer.model.streams.items():
        for name, variable in checkpoints.variable_map(
            model, streams_lib.SCOPES[stream]).items():
          if "/Logits/" not in name:
            np.testing.assert_array_equal(variable.numpy(), trained[name],
                                          err_msg=name)
          elif trainer is same:  # The trained logits, not new ones.
            np.testing.assert_array_equal(variable.numpy(), trained[name],
                                          err_msg=name)
          else:  # Other classes: new logits of their size.
            self.assertEqual(variable.shape[-1], 3)
    # Training moved the logits away from where a fresh start puts them.
    name = "RGB/inception_i3d/Logits/Conv3d_0c_1x1/conv_3d/w"
    self.assertFalse(np.array_equal(
        trained[name], checkpoints.variable_map(
            kinetics.model.streams["rgb"], "RGB")[name].numpy()))

  def test_init_from_a_missing_run_is_one_clear_error(self):
    with self.assertRaisesRegex(train_checkpointer.TrainingError,
                                "cannot start from the run"):
      train_loop.Trainer(self.config(init_from=self.train_dir()))

  def test_logits_only_trains_logits(self):
    trainer = train_loop.Trainer(self.config())
    names = sorted(v.name for v in trainer.trainable_variables)
    self.assertEqual(names, [
        "Flow/inception_i3d/Logits/Conv3d_0c_1x1/conv_3d/b:0",
        "Flow/inception_i3d/Logits/Conv3d_0c_1x1/conv_3d/w:0",
        "RGB/inception_i3d/Logits/Conv3d_0c_1x1/conv_3d/b:0",
        "RGB/inception_i3d/Logits/Conv3d_0c_1x1/conv_3d/w:0"])

  def test_learning_rate_schedule(self):
    config = self.config(learning_rate=1.0, lr_schedule="cosine",
                         warmup_steps=4, num_steps=14)
    rates = [float(train_steps.learning_rate_at(config, s)) for s in range(15)]
    np.testing.assert_allclose(rates[:4], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(rates[9], 0.5, atol=1e-6)
    self.assertAlmostEqual(rates[14], 0.0, places=6)


class TrainingLoopTest(TinyDataTest):

  def test_loss_falls(self):
    # Flow statistics are re-estimated on these flat 36-pixel clips:
    # batch_norm.VARIANCE_FLOOR keeps their near-constant channels from
    # blowing the features up.
    trainer = train_loop.Trainer(self.config(num_steps=30, learning_rate=0.005,
                                           checkpoint_every=100))
    features = train_features.training_features(trainer.stages,
                                                trainer.config)
    self.assertEqual(features["rgb"].shape[0], features["label"].shape[0])
    losses = []
    original = train_steps.make_train_step

    def recording_step(*args):
      step = original(*args)

      def run(iterator):
        outputs = step(iterator)
        losses.append(float(outputs["loss"]))
        return outputs
      return run

    with mock.patch.object(train_steps, "make_train_step", recording_step):
      trainer.train()
    self.assertLess(np.mean(losses[-5:]), 0.5 * np.mean(losses[:5]))

  def test_fast_path_reaches_the_same_weights_as_the_slow_path(self):
    batch = next(iter(data_pipeline.make_train_dataset(
        self.cache_dir, num_frames=4, crop_size=32, batch_size=2, seed=3)))
    weights = []
    for from_features in (False, True):
      trainer = train_loop.Trainer(self.config())
      inputs = dict(batch)
      if from_features:
        inputs.update({s: stage.frozen(batch[s])
                       for s, stage in trainer.stages.items()})
      for _ in range(3):
        trainer.strategy.run(train_steps.replica_step,
                             args=(trainer.state, trainer.config, inputs,
                                   from_features))
      weights.append([v.numpy() for v in trainer.trainable_variables])
    for slow, fast in zip(*weights):
      np.testing.assert_allclose(slow, fast, rtol=1e-5, atol=1e-6)

  def test_training_features_hold_feature_views_of_each_video(self):
    trainer = train_loop.Trainer(self.config(feature_views=3))
    features = train_features.training_features(trainer.stages,
                                                trainer.config)
    num_videos = len(data_cache.read_cache(self.cache_dir).split_entries(
        "train"))
    np.testing.assert_array_equal(
        np.bincount(features["index"], minlength=num_videos),
        [3] * num_videos)
    with self.assertRaisesRegex(ValueError, "finite"):
      train_features.frozen_features(
          trainer.stages, data_pipeline.make_train_dataset(
              self.cache_dir, num_frames=4, crop_size=32, batch_size=2))

  def test_features_are_cached_per_stream(self):
    # An RGB run reads a joint run's RGB features; flow features whose
    # re-estimated statistics come from other training videos are computed
    # again, and only they.
    features_dir = self.create_tempdir().full_path
    counter = testdata.CallCounter(data_pipeline.make_feature_views_dataset)

    def computed():  # (streams, number of videos) of each extraction
      return [(tuple(args[2]), len(args[1])) for args in counter.args]

    def features(cache_dir=self.cache_dir, **overrides):
      trainer = train_loop.Trainer(tiny_config(
          cache_dir, self.train_dir(), self.rgb_checkpoint,
          features_dir=features_dir, **overrides))
      return train_features.training_features(trainer.stages, trainer.config)

    with mock.patch.object(data_pipeline, "make_feature_views_dataset",
                           counter):
      joint = features()
      rgb = features(stream="rgb")
      np.testing.assert_array_equal(rgb["rgb"], joint["rgb"])
      self.assertEqual(computed(), [(("rgb", "flow"), 6)])
      paths = [e.path for e in data_cache.read_cache(
          self.cache_dir).split_entries("train")]
      other_split = data_cache.write_split_view(
          self.cache_dir, os.path.join(features_dir, "view"), paths[:4],
          paths[4:])
      features(cache_dir=other_split)
      self.assertEqual(computed()[1:], [(("flow",), 4)])

  def test_training_after_bfloat16_inference_is_float32(self):
    """bfloat16 inference, then training: the same weights as without it.

    On a CPU with AVX512-BF16/AMX a leaked bfloat16 rewrite would change
    the steps (or make them NaN); elsewhere the rewrite never runs.
    """
    config = dict(feature_cache=False, num_steps=2, checkpoint_every=100)
    trainer = train_loop.Trainer(self.config(inference_bfloat16="on",
                                             **config))
    batch = next(iter(data_pipeline.make_train_dataset(
        self.cache_dir, num_frames=4, crop_size=32, batch_size=2, seed=3)))
    clips = {s: batch[s].numpy() for s in trainer.model.streams}
    float32 = classify.Classifier(trainer.model, CLASSES).logits(clips)
    bfloat16 = classify.Classifier(trainer.model, CLASSES,
                                   bfloat16=True).logits(clips)
    train_features.frozen_features(
        trainer.stages, data_pipeline.make_train_dataset(
            self.cache_dir, num_frames=4, crop_size=32, batch_size=2,
            repeat=False), bfloat16=True)
    if precision.cpu_has_bfloat16():  # The rewrite ran: the check means it.
      self.assertFalse(np.array_equal(bfloat16["joint"], float32["joint"]))
    trainer.train()
    fresh = train_loop.Trainer(self.config(inference_bfloat16="off", **config))
    fresh.train()
    for after, reference in zip(trainer.trainable_variables,
                                fresh.trainable_variables):
      np.testing.assert_allclose(after.numpy(), reference.numpy(), rtol=1e-6,
                                 atol=1e-7, err_msg=after.name)

  def test_mixed_precision_is_set_for_its_steps_only(self):
    option = "auto_mixed_precision"
    before = tf.config.optimizer.get_experimental_options().get(option, False)
    trainer = train_loop.Trainer(self.config(mixed_precision=True, num_steps=1,
                                             checkpoint_every=100))
    trainer.train()
    self.assertEqual(
        tf.config.optimizer.get_experimental_options().get(option, False),
        before)

  def test_resume_continues_from_the_saved_step_and_optimizer_state(self):
    config = self.config(num_steps=4, checkpoint_every=2)
    trainer = train_loop.Trainer(config)
    trainer.train()
    saved_step = int(trainer.step.numpy())
    accumulators = [a.numpy() for a in trainer.optimizer.accumulators]
    weights = [v.numpy() for v in trainer.trainable_variables]
    self.assertEqual(saved_step, 4)
    self.assertTrue(any(np.abs(a).sum() > 0 for a in accumulators))

    config.num_steps = 6
    resumed = train_loop.Trainer(config)
    self.assertEqual(int(resumed.step.numpy()), 4)
    for before, after in zip(accumulators, resumed.optimizer.accumulators):
      np.testing.assert_array_equal(before, after.numpy())
    for before, after in zip(weights, resumed.trainable_variables):
      np.testing.assert_array_equal(before, after.numpy())
    self.assertEqual(resumed.train()["step"], 6)
    self.assertEqual(
        os.path.basename(resumed.checkpointer.manager.latest_checkpoint),
        "ckpt-6")

  def test_rerun_on_other_training_videos_is_refused(self):
    info = data_cache.read_cache(self.cache_dir)
    config = self.config(training_data=info.split_fingerprint("train"))
    config_lib.save_config(config)
    train_checkpointer.check_training_data(config)  # The same videos.
    # The same classes, other videos (the demo data regenerated, say).
    other = data_cache.read_cache(testdata.prepare_direction_cache(
        self.create_tempdir().full_path, videos_per_class=5))
    self.assertNotEqual(other.split_fingerprint("train"),
                        config.training_data)
    with self.assertRaisesRegex(train_checkpointer.TrainingError,
                                "holds a run trained on other videos"):
      train_checkpointer.check_training_data(dataclasses.replace(
          config, cache_dir=other.cache_dir,
          training_data=other.split_fingerprint("train")))

  def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(self):
    trainer = train_loop.Trainer(self.config(num_steps=2, checkpoint_every=1))
    trainer.train()
    good = trainer.checkpointer.manager.latest_checkpoint
    trainer.config.num_steps = 10
    trainer.learning_rate.assign(np.inf)
    trainer.config.learning_rate = float("inf")
    with self.assertRaisesRegex(train_checkpointer.TrainingError,
                                "diverged at step .* not finite.* last good "
                                "checkpoint is .*ckpt-2"):
      trainer.train()
    self.assertEqual(tf.train.latest_checkpoint(
        os.path.dirname(good)), good)

  def test_evaluate_gives_metrics_for_each_stream(self):
    config = self.config(num_steps=2)
    trainer = train_loop.Trainer(config)
    trainer.train()
    metrics = evaluation.evaluate_model(trainer.model, config).metrics
    self.assertEqual(set(metrics["streams"]), {"rgb", "flow", "joint"})
    self.assertEqual(metrics["classes"], list(CLASSES))
    self.assertEqual(metrics["num_videos"], 2)

  def test_logits_from_cached_features_equal_evaluate_model(self):
    for trainable in ("logits", "mixed_5"):
      config = self.config(num_steps=2, trainable=trainable)
      trainer = train_loop.Trainer(config)
      trainer.train()
      expected = evaluation.evaluate_model(trainer.model, config).logits
      for _ in range(2):  # Computed, then read back from the cache.
        logits = train_features.logits_from_features(trainer.stages, config,
                                                     "eval")
        for stream in config.streams:
          np.testing.assert_allclose(logits[stream], expected[stream],
                                     rtol=1e-4, atol=1e-4, err_msg=trainable)

  def test_training_views_are_the_same_in_any_training_set(self):
    # A video's cached views depend on the video and the settings, not on
    # the other videos of the split: features of one video computed alone
    # equal its features computed with the rest of the split. (The flow
    # statistics keep the checkpoint's: see test_loss_falls.)
    config = self.config(flow_batch_norm_batches=0)
    trainer = train_loop.Trainer(config)
    info = data_cache.read_cache(self.cache_dir)
    entries = info.split_entries("train")

    def views(videos):
      batches = data_pipeline.make_feature_views_dataset(
          info, videos, config.streams, config.num_frames, config.crop_size,
          num_views=2, seed=config.seed, batch_size=3)
      return train_features.frozen_features(trainer.stages, batches,
                                            keep=("index", "view"))

    together, alone = views(entries), views(entries[2:3])
    rows = together["index"] == 2
    np.testing.assert_array_equal(together["view"][rows], alone["view"])
    for stream in config.streams:
      np.testing.assert_allclose(together[stream][rows], alone[stream],
                                 rtol=1e-5, atol=1e-5)
    # The two views differ (different augmentations).
    self.assertFalse(np.allclose(alone["rgb"][0], alone["rgb"][1]))

  def test_load_trained_model_and_its_errors(self):
    config = self.config(num_steps=2)
    config_lib.save_config(config)
    with self.assertRaisesRegex(FileNotFoundError, "no checkpoint"):
      eval_runs.load_trained_model(config.train_dir)
    trainer = train_loop.Trainer(config)
    trainer.train()
    model, loaded = eval_runs.load_trained_model(config.train_dir)
    self.assertEqual(loaded.classes, CLASSES)
    np.testing.assert_array_equal(
        model.streams["rgb"].logits.conv.w.numpy(),
        trainer.model.streams["rgb"].logits.conv.w.numpy())


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


_DISTRIBUTED_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
from i3d import config as config_lib
from i3d.train import loop as train_loop
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * 2)
config = config_lib.TrainConfig(**json.loads(sys.argv[1]))
trainer = train_loop.Trainer(config)
trainer.train()
np.savez(sys.argv[2], *[v.numpy() for v in trainer.trainable_variables],
         replicas=trainer.strategy.num_replicas_in_sync)
"""


@pytest.mark.slow
class DistributedTest(TinyDataTest):

  def run_script(self, config: config_lib.TrainConfig, output: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _DISTRIBUTED_SCRIPT,
         json.dumps(config.to_json()), output], cwd=ROOT, capture_output=True,
        text=True, check=False, timeout=300)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    return dict(np.load(output))

  def test_mirrored_equals_single_device(self):
    outputs = {}
    for strategy in ("default", "mirrored"):
      config = self.config(strategy=strategy, num_steps=3, checkpoint_every=10)
      outputs[strategy] = self.run_script(
          config, os.path.join(config.train_dir, "weights.npz"))
    self.assertEqual(int(outputs["default"]["replicas"]), 1)
    self.assertEqual(int(outputs["mirrored"]["replicas"]), 2)
    weights = set(outputs["default"]) - {"replicas"}
    self.assertLen(weights, 4)  # Logits w and b of each stream.
    for key in weights:
      np.testing.assert_allclose(outputs["mirrored"][key],
                                 outputs["default"][key], rtol=1e-4,
                                 atol=1e-6, err_msg=key)

  def test_multi_worker_runs_to_completion(self):
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    config = self.config(strategy="multi_worker", num_steps=3,
                         checkpoint_every=2)
    config_lib.save_config(config)
    workers, logs = [], []
    for index in range(2):
      env = dict(os.environ, TF_CONFIG=json.dumps(
          {"cluster": cluster, "task": {"type": "worker", "index": index}}))
      # Files, not pipes: a worker blocked on a full pipe would stall the
      # other in a collective op.
      logs.append(open(os.path.join(config.train_dir, f"worker{index}.log"),
                       "w+"))
      self.addCleanup(logs[-1].close)
      workers.append(subprocess.Popen(
          [sys.executable, os.path.join(ROOT, "train.py"), "--noprepare",
           f"--cache_dir={self.cache_dir}", f"--train_dir={config.train_dir}",
           "--strategy=multi_worker", "--num_frames=4", "--crop_size=32",
           "--batch_size=2", "--num_steps=3", "--checkpoint_every=2",
           f"--rgb_checkpoint={self.rgb_checkpoint}", "--feature_views=1",
           "--noexport", "--eval_num_frames=4"],
          cwd=ROOT, env=env, stdout=logs[-1], stderr=subprocess.STDOUT))
    for worker, log in zip(workers, logs):
      worker.wait(timeout=400)
      log.seek(0)
      self.assertEqual(worker.returncode, 0, log.read()[-3000:])
    self.assertEqual(os.path.basename(train_checkpointer.latest_checkpoint(
        config.train_dir)), "ckpt-3")
    with open(os.path.join(config.train_dir, evaluation.METRICS_FILE)) as f:
      self.assertEqual(json.load(f)["num_videos"], 2)


class ScriptImportsTest(parameterized.TestCase):

  @parameterized.parameters("train.py", "evaluate.py", "prepare_data.py")
  def test_spawned_workers_import_no_tensorflow(self, script):
    # A spawned worker runs the main script as __mp_main__: its imports and
    # flag definitions, not main().
    code = (f"import runpy, sys; sys.argv = [{script!r}]; "
            f"runpy.run_path({os.path.join(ROOT, script)!r}, "
            f"run_name='__mp_main__'); print('tensorflow' in sys.modules)")
    output = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    self.assertEqual(output.split()[-1], "False")


@pytest.mark.slow
class TrainScriptTest(TinyDataTest):

  def train_command(self, cache_dir: str, train_dir: str, num_steps: int,
                    checkpoint_every: int, *flags: str) -> list[str]:
    """train.py on a prepared tiny cache, logging every step."""
    return [sys.executable, os.path.join(ROOT, "train.py"), "--noprepare",
            f"--cache_dir={cache_dir}", f"--train_dir={train_dir}",
            "--num_frames=4", "--crop_size=32", "--batch_size=2",
            f"--num_steps={num_steps}",
            f"--checkpoint_every={checkpoint_every}", "--log_every=1",
            f"--rgb_checkpoint={self.rgb_checkpoint}", "--feature_views=1",
            "--noexport", *flags]

  def test_sigterm_saves_and_exits_cleanly(self):
    train_dir = self.train_dir()
    process = subprocess.Popen(
        self.train_command(self.cache_dir, train_dir, 100000, 100000),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in process.stdout:
      lines.append(line)
      if "step 3/100000" in line:
        process.send_signal(signal.SIGTERM)
        break
    output = "".join(lines) + process.communicate(timeout=120)[0]
    self.assertEqual(process.returncode, 0, output[-3000:])
    self.assertIn("Stop requested at step", output)
    step = int(os.path.basename(train_checkpointer.latest_checkpoint(train_dir))[5:])
    self.assertGreaterEqual(step, 3)
    with open(os.path.join(train_dir, config_lib.CONFIG_FILE)) as f:
      self.assertEqual(json.load(f)["classes"], list(CLASSES))

  def test_a_cache_without_eval_videos_trains_without_evaluation(self):
    root = self.create_tempdir().full_path
    cache_dir = os.path.join(root, "cache")
    report = data_cache.prepare_dataset(
        cache_dir, manifest=testdata.make_direction_dataset(
            os.path.join(root, "videos"), CLASSES, videos_per_class=2),
        classes=list(CLASSES),
        config=config_lib.PreprocessConfig(short_side=36,
                                           flow_algorithm="dis"),
        eval_fraction=0.0, seed=0)
    self.assertTrue(report.ok, report.summary())
    train_dir = self.train_dir()
    result = subprocess.run(
        self.train_command(cache_dir, train_dir, 2, 2, "--eval_every=1"),
        cwd=ROOT, capture_output=True, text=True, check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    # Warned before the first step, not found missing after the training.
    output = result.stderr
    self.assertLess(output.index("training without evaluation"),
                    output.index("step 1/2"))
    self.assertFalse(os.path.exists(
        os.path.join(train_dir, evaluation.METRICS_FILE)))
    self.assertEqual(os.path.basename(
        train_checkpointer.latest_checkpoint(train_dir)), "ckpt-2")


if __name__ == "__main__":
  absltest.main()
