"""Tests for i3d.export: the name-based checkpoint and the SavedModel."""

import json
import os
import shutil
import subprocess
import sys
from unittest import mock

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from i3d import checkpoints
from i3d import config as config_lib
from i3d import export
from i3d import labels
from i3d import streams as streams_lib
from i3d.train import checkpointer as train_checkpointer
from i3d import two_stream
from tests import testdata

REFERENCE = os.path.join(testdata.REFERENCE, "checkpoints")
REFERENCES = {"rgb": "rgb_scratch", "flow": "flow_scratch"}

CLASSES = ("squat_correct", "squat_not-low", "crunch_correct")
CROP = 16
LOGITS = "Logits/Conv3d_0c_1x1/conv_3d/"
# What a run trained on 20-pixel frames saves with its exports.
PREPROCESSING = config_lib.TrainConfig(
    classes=CLASSES, crop_size=CROP, num_frames=4,
    preprocess=config_lib.PreprocessConfig(short_side=CROP + 4,
                                           flow_algorithm="dis")
).preprocessing()


def random_clips(streams, batch: int, frames: int, seed: int):
  rng = np.random.RandomState(seed)
  return {s: rng.uniform(-1, 1, [batch, frames, CROP, CROP,
                                 streams_lib.CHANNELS[s]])
             .astype(np.float32) for s in streams}


def built_model(num_classes: int, streams) -> two_stream.TwoStreamI3d:
  net = two_stream.TwoStreamI3d(num_classes, streams)
  for stream, stream_model in net.streams.items():
    checkpoints.ensure_built(stream_model, streams_lib.CHANNELS[stream])
  return net


def perturb(net: two_stream.TwoStreamI3d, seed: int) -> None:
  """Moves every variable away from its initial value.

  Biases, offsets and moving means start at zero and moving variances at one;
  a variable left out of an export would restore to those (or to a fresh
  random kernel) and change the logits.
  """
  rng = np.random.RandomState(seed)
  for variable in net.variables:
    shape = variable.shape.as_list()
    leaf = variable.name.split(":")[0].rsplit("/", 1)[1]
    if leaf == "w":
      value = variable.numpy() * rng.uniform(0.5, 1.5, shape)
    elif leaf == "moving_variance":
      value = rng.uniform(0.5, 1.5, shape)
    else:  # b, beta, moving_mean.
      value = rng.uniform(-0.2, 0.2, shape)
    variable.assign(value.astype(np.float32))


def hidden_entries(directory: str) -> list[str]:
  """Leftover temporary (hidden) entries under a directory tree."""
  return [os.path.join(root, name)
          for root, dirs, files in os.walk(directory)
          for name in dirs + files if name.startswith(".")]


class ExportTest(absltest.TestCase):
  """One two-stream model, exported once, checked by every test."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = testdata.class_tempdir(cls)
    # A one-device MirroredStrategy gives the variables their training types:
    # mirrored weights and ON_READ (MEAN) batch-norm statistics.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
      cls.model = built_model(len(CLASSES), ("rgb", "flow"))
      perturb(cls.model, seed=1)
    cls.clips = random_clips(("rgb", "flow"), batch=1, frames=4, seed=2)
    cls.expected = {k: v.numpy() for k, v in
                    cls.model(cls.clips, is_training=False).items()}
    cls.paths = export.export_all(cls.model, cls.tmp, CLASSES, CROP,
                                  PREPROCESSING)

  def test_layout(self):
    export_dir = os.path.join(self.tmp, export.EXPORT_SUBDIR)
    self.assertEqual(
        self.paths,
        export.ExportPaths(
            deepmind_checkpoint=os.path.join(
                export_dir, export.DEEPMIND_CHECKPOINT_SUBDIR, "model.ckpt"),
            saved_model=os.path.join(export_dir, export.SAVED_MODEL_SUBDIR)))
    checkpoint_dir = os.path.dirname(self.paths.deepmind_checkpoint)
    self.assertEqual(
        labels.read_class_file(os.path.join(checkpoint_dir, "classes.txt")),
        list(CLASSES))
    self.assertEqual(
        labels.read_class_file(os.path.join(self.paths.saved_model, "assets",
                                            "classes.txt")), list(CLASSES))
    self.assertEqual(hidden_entries(self.tmp), [])

  def test_both_exports_hold_the_preprocessing(self):
    with open(os.path.join(os.path.dirname(self.paths.deepmind_checkpoint),
                           export.PREPROCESSING_FILE), encoding="utf-8") as f:
      self.assertEqual(json.load(f), PREPROCESSING)
    loaded = tf.saved_model.load(self.paths.saved_model)
    self.assertEqual(json.loads(loaded.preprocessing.numpy()), PREPROCESSING)
    with open(loaded.preprocessing_file.asset_path.numpy(),
              encoding="utf-8") as f:
      self.assertEqual(json.load(f), PREPROCESSING)
    self.assertEqual(PREPROCESSING["short_side"], CROP + 4)
    self.assertEqual(PREPROCESSING["streams"], ["rgb", "flow"])

  def test_checkpoint_has_deepmind_names_and_shapes(self):
    shapes = dict(tf.train.list_variables(self.paths.deepmind_checkpoint))
    k = len(CLASSES)
    for scope in ("RGB", "Flow"):
      self.assertEqual(shapes[f"{scope}/inception_i3d/{LOGITS}w"],
                       [1, 1, 1, 1024, k])
      self.assertEqual(shapes[f"{scope}/inception_i3d/{LOGITS}b"], [k])
    self.assertEqual(
        shapes["Flow/inception_i3d/Conv3d_1a_7x7/conv_3d/w"], [7, 7, 7, 2, 64])
    self.assertEqual(
        shapes["RGB/inception_i3d/Mixed_5c/Branch_3/Conv3d_0b_1x1/batch_norm/"
               "moving_variance"], [128])
    # Every name and shape of DeepMind's checkpoints, the logits resized.
    expected = {}
    for reference in REFERENCES.values():
      for name, shape in tf.train.list_variables(
          os.path.join(REFERENCE, reference, "model.ckpt")):
        expected[name] = shape
    for scope in ("RGB", "Flow"):
      expected[f"{scope}/inception_i3d/{LOGITS}w"] = [1, 1, 1, 1024, k]
      expected[f"{scope}/inception_i3d/{LOGITS}b"] = [k]
    self.assertEqual(shapes, expected)

  def test_checkpoint_holds_the_model_values(self):
    reader = tf.train.load_checkpoint(self.paths.deepmind_checkpoint)
    for stream, stream_model in self.model.streams.items():
      variables = checkpoints.variable_map(stream_model,
                                           checkpoints.stream_scope(stream))
      for name, variable in variables.items():
        np.testing.assert_array_equal(reader.get_tensor(name),
                                      variable.numpy(), err_msg=name)

  def test_tf1_saver_restores_in_graph_mode(self):
    with tf.Graph().as_default() as graph:
      net = two_stream.TwoStreamI3d(len(CLASSES), ("rgb", "flow"))
      logits = net({s: tf.constant(x) for s, x in self.clips.items()},
                   is_training=False)
      var_list = {}
      for stream, stream_model in net.streams.items():
        var_list.update(checkpoints.variable_map(
            stream_model, checkpoints.stream_scope(stream)))
      # The graph's own variable names are DeepMind's too.
      self.assertEqual(
          sorted(v.op.name for v in graph.get_collection(
              tf.compat.v1.GraphKeys.GLOBAL_VARIABLES)), sorted(var_list))
      saver = tf.compat.v1.train.Saver(var_list=var_list)
      with tf.compat.v1.Session(graph=graph) as session:
        saver.restore(session, self.paths.deepmind_checkpoint)
        restored = session.run(logits)
    for key in ("rgb", "flow", "joint"):
      np.testing.assert_allclose(restored[key], self.expected[key], atol=1e-5,
                                 rtol=1e-5, err_msg=key)

  def test_readme_tf1_example_restores_in_a_fresh_process(self):
    # README's code as a user runs it: a new process, whose first Sonnet
    # module is built inside the graph.
    with open(os.path.join(testdata.ROOT, "README.md"), encoding="utf-8") as f:
      readme = f.read()
    start = readme.index("```python\n", readme.index(
        "**Name-based checkpoint (TF1 graphs)")) + len("```python\n")
    example = readme[start:readme.index("```", start)]
    example = example.replace(
        '"runs/demo/export/deepmind_checkpoint"',
        repr(os.path.dirname(self.paths.deepmind_checkpoint))).replace(
            "112, 112", f"{CROP}, {CROP}")
    inputs = os.path.join(self.tmp, "clips.npz")
    output = os.path.join(self.tmp, "joint.npy")
    np.savez(inputs, **self.clips)
    code = (f"import numpy as np\nclips = np.load({inputs!r})\n"
            "rgb_clip, flow_clip = clips['rgb'], clips['flow']\n" + example +
            f"np.save({output!r}, joint)\n")
    subprocess.run([sys.executable, "-c", code], cwd=testdata.ROOT,
                   check=True, capture_output=True)
    np.testing.assert_allclose(np.load(output), self.expected["joint"],
                               atol=1e-5, rtol=1e-5)

  def test_saved_model_signature_equals_eager_model(self):
    loaded = tf.saved_model.load(self.paths.saved_model)
    serve = loaded.signatures[export.SIGNATURE_KEY]
    self.assertEqual(set(serve.structured_input_signature[1]),
                     {"rgb", "flow"})
    self.assertEqual(set(serve.structured_outputs),
                     {"logits", "probabilities", "rgb_logits", "flow_logits"})
    # Two clip lengths: Mixed_5c has 1 frame, then 2 (averaged in pairs).
    for batch, frames in ((1, 3), (2, 9)):
      clips = random_clips(("rgb", "flow"), batch, frames, seed=frames)
      expected = self.model(clips, is_training=False)
      outputs = serve(**{s: tf.constant(x) for s, x in clips.items()})
      np.testing.assert_allclose(outputs["logits"], expected["joint"],
                                 atol=1e-5, rtol=1e-5)
      np.testing.assert_allclose(outputs["probabilities"],
                                 tf.nn.softmax(expected["joint"]), atol=1e-6)
      for stream in ("rgb", "flow"):
        np.testing.assert_allclose(outputs[f"{stream}_logits"],
                                   expected[stream], atol=1e-5, rtol=1e-5)
    self.assertEqual([c.decode() for c in loaded.classes.numpy()],
                     list(CLASSES))
    self.assertEqual(list(loaded.streams.numpy()), [b"rgb", b"flow"])
    self.assertEqual(int(loaded.crop_size.numpy()), CROP)
    called = loaded({s: tf.constant(x) for s, x in self.clips.items()})
    np.testing.assert_allclose(called["logits"], self.expected["joint"],
                               atol=1e-5, rtol=1e-5)

  def test_saved_model_classifies_uncropped_frames_fully_convolutionally(self):
    # As predict.py does for ../shared/cases/full_frame_256x340.npy: the
    # logits of the 2x5 positions of 256x340 frames are averaged.
    serve = tf.saved_model.load(self.paths.saved_model).signatures[
        export.SIGNATURE_KEY]
    rng = np.random.RandomState(3)
    clips = {s: rng.uniform(-1, 1, [1, 2, 256, 340, c]).astype(np.float32)
             for s, c in streams_lib.CHANNELS.items()}
    expected = self.model(clips, is_training=False)
    outputs = serve(**{s: tf.constant(x) for s, x in clips.items()})
    np.testing.assert_allclose(outputs["logits"], expected["joint"],
                               atol=1e-4, rtol=1e-4)

  def test_hub_load(self):
    import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
    loaded = hub.load(self.paths.saved_model)
    outputs = loaded.signatures["serving_default"](
        **{s: tf.constant(x) for s, x in self.clips.items()})
    np.testing.assert_allclose(outputs["logits"], self.expected["joint"],
                               atol=1e-5, rtol=1e-5)
    with open(loaded.classes_file.asset_path.numpy(), encoding="utf-8") as f:
      self.assertEqual(f.read().split(), list(CLASSES))

  def test_rerun_replaces_the_export(self):
    directory = os.path.join(self.tmp, "rerun")
    shutil.copytree(os.path.join(self.tmp, export.EXPORT_SUBDIR),
                    os.path.join(directory, export.EXPORT_SUBDIR))
    classes = ("a", "b", "c", "d")
    net = built_model(len(classes), ("rgb",))
    perturb(net, seed=3)
    # The two exports one by one (export_all made the ones they replace).
    export_dir = os.path.join(directory, export.EXPORT_SUBDIR)
    paths = export.ExportPaths(
        deepmind_checkpoint=export.export_name_based(
            net, os.path.join(export_dir, export.DEEPMIND_CHECKPOINT_SUBDIR),
            classes),
        saved_model=export.export_saved_model(
            net, os.path.join(export_dir, export.SAVED_MODEL_SUBDIR), classes,
            CROP))
    self.assertEqual(hidden_entries(directory), [])
    self.assertEqual(sorted(os.listdir(os.path.dirname(paths.saved_model))),
                     [export.DEEPMIND_CHECKPOINT_SUBDIR,
                      export.SAVED_MODEL_SUBDIR])
    names = {name for name, _ in
             tf.train.list_variables(paths.deepmind_checkpoint)}
    self.assertEqual(names, set(checkpoints.variable_map(net.streams["rgb"],
                                                         "RGB")))
    loaded = tf.saved_model.load(paths.saved_model)
    serve = loaded.signatures[export.SIGNATURE_KEY]
    self.assertEqual(set(serve.structured_input_signature[1]), {"rgb"})
    clips = random_clips(("rgb",), batch=1, frames=2, seed=4)
    np.testing.assert_allclose(serve(rgb=tf.constant(clips["rgb"]))["logits"],
                               net(clips, is_training=False)["joint"],
                               atol=1e-5, rtol=1e-5)
    self.assertEqual([c.decode() for c in loaded.classes.numpy()],
                     list(classes))


class SmallModelTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.tmp = self.create_tempdir().full_path

  def test_failed_export_keeps_the_previous_one(self):
    net = built_model(2, ("flow",))
    directory = os.path.join(self.tmp, "checkpoint")
    prefix = export.export_name_based(net, directory, ["x", "y"])
    before = tf.train.load_checkpoint(prefix).get_tensor(
        f"Flow/inception_i3d/{LOGITS}w")
    perturb(net, seed=5)
    with mock.patch.object(checkpoints, "write_checkpoint",
                           side_effect=OSError("disk full")):
      with self.assertRaisesRegex(OSError, "disk full"):
        export.export_name_based(net, directory, ["x", "y"])
    np.testing.assert_array_equal(
        tf.train.load_checkpoint(prefix).get_tensor(
            f"Flow/inception_i3d/{LOGITS}w"), before)
    self.assertEqual(hidden_entries(self.tmp), [])
    self.assertEqual(os.listdir(self.tmp), ["checkpoint"])

  def test_rejects_a_class_list_that_does_not_fit(self):
    net = two_stream.TwoStreamI3d(3, ("rgb",))
    with self.assertRaisesRegex(ValueError, "2 class names"):
      export.export_name_based(net, self.tmp, ["a", "b"])
    with self.assertRaisesRegex(ValueError, "read back"):
      export.export_name_based(net, self.tmp, ["a", "#b", "c"])
    with self.assertRaisesRegex(ValueError, "duplicate"):
      export.export_saved_model(net, self.tmp, ["a", "a", "c"], CROP)

  def test_rejects_an_unbuilt_model(self):
    net = two_stream.TwoStreamI3d(2, ("rgb",))
    with self.assertRaisesRegex(ValueError, "no variables"):
      export.export_name_based(net, os.path.join(self.tmp, "x"), ["a", "b"])
    self.assertEqual(os.listdir(self.tmp), [])

  def test_export_train_dir_exports_the_latest_checkpoint(self):
    config = config_lib.TrainConfig(
        cache_dir=self.tmp, train_dir=self.tmp, classes=("a", "b"),
        stream="rgb", crop_size=CROP,
        preprocess=config_lib.PreprocessConfig(short_side=CROP + 8))
    config_lib.save_config(config)
    net = built_model(2, ("rgb",))
    perturb(net, seed=6)
    saved = tf.train.Checkpoint(model=net).save(
        os.path.join(self.tmp, train_checkpointer.CHECKPOINT_SUBDIR, "ckpt"))
    # The latest, and the same checkpoint named by one of its files.
    for checkpoint in (None, saved + ".index", saved + ".data-00000-of-00001"):
      with mock.patch.object(export, "export_all", autospec=True) as export_all:
        export.export_train_dir(self.tmp, checkpoint)
      (model, directory, classes, crop_size,
       preprocessing), _ = export_all.call_args
      self.assertEqual((directory, tuple(classes), crop_size),
                       (self.tmp, ("a", "b"), CROP))
      self.assertEqual(preprocessing, config.preprocessing())
      self.assertEqual(tuple(model.streams), ("rgb",))
      for ours, theirs in zip(model.variables, net.variables):
        self.assertEqual(ours.name, theirs.name)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


if __name__ == "__main__":
  absltest.main()
