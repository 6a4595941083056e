"""Tests of i3d.config: settings declared once, their flags and validation."""

import dataclasses
import json
import os
import subprocess
import sys
import time

from absl import flags
from absl.testing import absltest
from absl.testing import parameterized

from i3d import config as config_lib
from tests import testdata

ROOT = testdata.ROOT


def fresh_flags(config_class, **kwargs) -> flags.FlagValues:
  flag_values = flags.FlagValues()
  config_lib.define_flags(config_class, flag_values=flag_values, **kwargs)
  return flag_values


class SettingsTest(parameterized.TestCase):

  @parameterized.parameters(config_lib.PrepareConfig,
                            config_lib.PreprocessConfig,
                            config_lib.TrainConfig)
  def test_every_field_is_a_documented_setting(self, config_class):
    for field in dataclasses.fields(config_class):
      self.assertTrue(field.metadata.get("doc"), field.name)

  def test_flags_take_type_default_choices_and_doc_from_the_setting(self):
    flag_values = fresh_flags(config_lib.TrainConfig)
    self.assertNotIn("classes", flag_values)  # Derived: no flag.
    self.assertEqual(flag_values["num_frames"].default, 64)
    self.assertEqual(flag_values["trainable"].flag_type(), "string enum")
    self.assertEqual(flag_values["trainable"].parser.enum_values,
                     list(config_lib.TRAINABLE_BOUNDARIES))
    self.assertIn("paper: 0.9", flag_values["momentum"].help)
    self.assertEqual(flag_values["batch_norm_training"].flag_type(), "bool")
    flag_values(["train.py", "--num_frames=16", "--stream=rgb",
                 "--nofeature_cache"])
    config = config_lib.from_flags(config_lib.TrainConfig, flag_values,
                                   classes=("a", "b"))
    self.assertEqual((config.num_frames, config.streams, config.feature_cache,
                      config.classes), (16, ("rgb",), False, ("a", "b")))

  @parameterized.parameters(
      ("--eval_num_crops=2", "eval_num_crops must be one of 1, 3, got 2"),
      ("--num_frames=0", "num_frames must be at least 1, got 0"),
      ("--dropout_keep_prob=1.5", "dropout_keep_prob must be at most 1.0"),
      ("--stream=both", "value should be one of <rgb|flow|joint>"))
  def test_a_bad_flag_fails_when_parsed(self, argument, message):
    flag_values = fresh_flags(config_lib.TrainConfig)
    with self.assertRaisesRegex(flags.IllegalFlagValueError, message):
      flag_values(["train.py", argument])

  def test_script_defaults_and_notes(self):
    flag_values = fresh_flags(
        config_lib.TrainConfig, names=["eval_num_crops"],
        defaults={"eval_num_crops": None}, note="Default: the run's.")
    flag_values(["evaluate.py"])
    self.assertIsNone(flag_values.eval_num_crops)
    self.assertIn("Default: the run's.", flag_values["eval_num_crops"].help)
    self.assertEqual(list(flag_values), ["eval_num_crops"])

  def test_values_built_in_code_are_checked_the_same_way(self):
    with self.assertRaisesRegex(ValueError, "eval_num_crops must be one of"):
      config_lib.TrainConfig(eval_num_crops=2)
    with self.assertRaisesRegex(ValueError, "flow_algorithm must be one of"):
      config_lib.PreprocessConfig(flow_algorithm="farneback")
    with self.assertRaisesRegex(ValueError, "same clip"):
      config_lib.TrainConfig(eval_num_clips=2)
    with self.assertRaisesRegex(ValueError, "crop_size 224 does not fit"):
      config_lib.TrainConfig(
          preprocess=config_lib.PreprocessConfig(short_side=128))
    self.assertIsNone(config_lib.TrainConfig(eval_num_frames=0)
                      .eval_num_frames)

  def test_config_json_round_trip_with_preprocessing(self):
    train_dir = self.create_tempdir().full_path
    config = config_lib.TrainConfig(
        cache_dir="cache", train_dir=train_dir, classes=("a", "b"),
        crop_size=112, preprocess=config_lib.PreprocessConfig(
            short_side=128, flow_algorithm="dis"))
    config_lib.save_config(config)
    loaded = config_lib.load_config(train_dir)
    self.assertEqual(loaded, config)
    self.assertEqual(loaded.preprocessing(), {
        "streams": ["rgb", "flow"], "fps": 25.0, "short_side": 128,
        "flow_algorithm": "dis", "max_frames": None, "flow_bound_px": 20.0,
        "value_range": [-1.0, 1.0], "crop_size": 112, "num_frames": 64,
        "eval_num_frames": None})

  def test_a_bad_config_json_names_the_file(self):
    train_dir = self.create_tempdir().full_path
    path = os.path.join(train_dir, config_lib.CONFIG_FILE)
    with open(path, "w") as f:
      json.dump({"train_dir": train_dir, "eval_num_crops": 5}, f)
    with self.assertRaisesRegex(ValueError, f"{path}: eval_num_crops"):
      config_lib.load_config(train_dir)

  def test_an_old_config_json_loads_without_preprocessing(self):
    train_dir = self.create_tempdir().full_path
    with open(os.path.join(train_dir, config_lib.CONFIG_FILE), "w") as f:
      json.dump({"cache_dir": "c", "train_dir": train_dir, "classes": ["a"]},
                f)
    config = config_lib.load_config(train_dir)
    self.assertIsNone(config.preprocess)
    with self.assertRaisesRegex(ValueError, "saved no preprocessing"):
      config.preprocessing()


class ScriptsTest(absltest.TestCase):

  def test_bad_setting_fails_before_any_work(self):
    train_dir = self.create_tempdir().full_path
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "train.py", "--flagfile=configs/demo.cfg",
         f"--train_dir={train_dir}", "--cache_dir=/nonexistent/cache",
         "--manifest=/nonexistent/manifest.csv", "--eval_num_crops=2"],
        cwd=ROOT, capture_output=True, text=True, check=False)
    self.assertLess(time.monotonic() - start, 60)
    self.assertNotEqual(result.returncode, 0)
    self.assertNotIn("Traceback", result.stderr)
    error = [line for line in result.stderr.splitlines()
             if "eval_num_crops" in line]
    self.assertEqual(error, ["FATAL Flags parsing error: flag "
                             "--eval_num_crops=2: eval_num_crops must be one "
                             "of 1, 3, got 2"])
    self.assertEqual(os.listdir(train_dir), [])

  def test_combinations_fail_before_any_work(self):
    result = subprocess.run(
        [sys.executable, "train.py", "--flagfile=configs/demo.cfg",
         "--cache_dir=/nonexistent/cache",
         "--manifest=/nonexistent/manifest.csv", "--crop_size=160"],
        cwd=ROOT, capture_output=True, text=True, check=False)
    self.assertNotEqual(result.returncode, 0)
    self.assertEqual(result.stderr.strip().splitlines(), [
        "error: crop_size 160 does not fit frames whose short_side is 128"])

  def test_scripts_that_spawn_workers_import_no_tensorflow(self):
    # Spawned workers re-import the main script: it must stay light.
    for script in ("train", "prepare_data", "evaluate"):
      result = subprocess.run(
          [sys.executable, "-c",
           f"import sys; import {script}; "
           "print('tensorflow' in sys.modules)"],
          cwd=ROOT, capture_output=True, text=True, check=True)
      self.assertEqual(result.stdout.strip(), "False", script)


if __name__ == "__main__":
  absltest.main()
