"""Exports of a trained two-stream I3D for other TensorFlow code.

Two formats, both written atomically (into a temporary sibling directory that
is then renamed into place, so a reader sees the old export or the complete new
one, and a failed run leaves no temporary directory behind):

* A name-based checkpoint in DeepMind's kinetics-i3d layout
  (`export_name_based`): `model.ckpt` holds every variable of every stream
  under its DeepMind name, `RGB/inception_i3d/...` and `Flow/inception_i3d/...`,
  including the new `Logits/Conv3d_0c_1x1/conv_3d/{w,b}` with `num_classes`
  outputs and the batch-norm moving statistics, with DeepMind's shapes. A TF1
  graph restores it with `tf.compat.v1.train.Saver(var_list={name: variable})`
  (DeepMind's `evaluate_sample.py` pattern). (`i3d.checkpoints.restore` reads
  back only a single-stream export: it expects one model per checkpoint.)
  `classes.txt` gives the class names in logit order and `preprocessing.json`
  how the inputs were made (see below).
* A SavedModel (`export_saved_model`) whose `serving_default` signature takes
  the model's streams, `rgb` float32 [batch, frames, crop, crop, 3] and/or
  `flow` [batch, frames, crop, crop, 2] with values in [-1, 1] (any batch size
  and clip length; frames larger than the crop, e.g. uncropped 256x340 ones,
  are classified fully convolutionally, their logits averaged over the extra
  spatial positions), and returns `logits` (the joint logits, [batch, classes]),
  `probabilities` (their softmax) and each stream's `<stream>_logits`. Batch
  norm runs in inference mode. The loaded object also has `classes` (a string
  variable), `streams`, `crop_size`, the `classes_file` asset and, for a
  trained run, `preprocessing` (a string variable holding the JSON below) and
  the `preprocessing_file` asset. It loads with `tf.saved_model.load` and
  `tensorflow_hub.load`.

The preprocessing the model was trained with (`i3d.config.TrainConfig.
preprocessing`) travels with both exports, so that other code feeds it the
same inputs: {"streams", "fps", "short_side", "flow_algorithm", "max_frames",
"flow_bound_px", "value_range", "crop_size", "num_frames",
"eval_num_frames"}. Read it with
  json.load(open("export/deepmind_checkpoint/preprocessing.json"))
  json.loads(tf.saved_model.load(path).preprocessing.numpy())

`export_all` writes both under `<train_dir>/export/`.

Usage:
  python -m i3d.export --train_dir=DIR [--checkpoint=DIR/ckpt/ckpt-N]
"""

import contextlib
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from i3d import checkpoints
from i3d import fileio
from i3d import labels
from i3d import streams as streams_lib
from i3d import two_stream

EXPORT_SUBDIR = "export"
DEEPMIND_CHECKPOINT_SUBDIR = "deepmind_checkpoint"
SAVED_MODEL_SUBDIR = "saved_model"
CLASSES_FILE = "classes.txt"
PREPROCESSING_FILE = "preprocessing.json"
SIGNATURE_KEY = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
JOINT_LOGITS = "logits"
PROBABILITIES = "probabilities"


@dataclasses.dataclass(frozen=True)
class ExportPaths:
  """Where `export_all` wrote the exports."""
  deepmind_checkpoint: str  # The checkpoint prefix, `.../model.ckpt`.
  saved_model: str  # The SavedModel directory.


def _check_classes(model: two_stream.TwoStreamI3d,
                   classes: Sequence[str]) -> list[str]:
  """Validates the class names against the model's logits.

  Raises:
    ValueError: if the list is empty, has duplicates, has a name that would
      not read back from classes.txt, or does not have one name per logit.
  """
  names = labels.validate_classes(classes)
  unreadable = [n for n in names
                if n != n.strip() or not n or "\n" in n or n.startswith("#")]
  if unreadable:
    raise ValueError(f"Class names {unreadable} would not read back from "
                     f"{CLASSES_FILE} (blank, surrounding spaces, newlines or "
                     "a leading #)")
  if len(names) != model.num_classes:
    raise ValueError(f"{len(names)} class names for a model with "
                     f"{model.num_classes} classes")
  return names


def _check_exportable(model: two_stream.TwoStreamI3d) -> None:
  """Raises ValueError unless the model is built and read cross-replica."""
  if (tf.distribute.has_strategy() and
      not tf.distribute.in_cross_replica_context()):
    raise ValueError("Export the model in cross-replica context, not inside "
                     "strategy.run")
  for stream, stream_model in model.streams.items():
    if not stream_model.variables:
      raise ValueError(f"The {stream} stream has no variables: build and "
                       "train (or restore) the model before exporting it")


def model_tensors(model: two_stream.TwoStreamI3d) -> Dict[str, np.ndarray]:
  """Reads every variable of every stream under its DeepMind name.

  Variables created under a `tf.distribute` strategy are read in cross-replica
  context: mirrored variables give their value, ON_READ batch-norm statistics
  the replicas' mean. Under `MultiWorkerMirroredStrategy` that mean is a
  collective across the workers, so every worker must take part: call the
  export on every worker (non-chief ones into a scratch directory, as for
  checkpoints), or call this function once on each non-chief worker while the
  chief calls `export_all`.

  Args:
    model: a built model.

  Returns:
    {"RGB/inception_i3d/...": float32 array, "Flow/inception_i3d/...": ...}.

  Raises:
    ValueError: if a stream has no variables yet (an unbuilt model would
      export random weights) or this runs in a replica context.
  """
  _check_exportable(model)
  tensors = {}
  for stream, stream_model in model.streams.items():
    scope = checkpoints.stream_scope(stream)
    for name, variable in checkpoints.variable_map(stream_model, scope).items():
      tensors[name] = (tf.convert_to_tensor(variable).numpy()
                       .astype(np.float32, copy=False))
  return tensors


@contextlib.contextmanager
def _replaced_directory(directory: str) -> Iterator[str]:
  """Yields an empty staging directory that then replaces `directory`.

  The staging directory is a hidden sibling of `directory` (same file
  system), so the final renames are atomic. An existing `directory` is renamed
  aside before the new one is renamed in and only then deleted; if the second
  rename fails, it is put back. On an exception nothing changes and the
  staging directory is removed.

  Args:
    directory: the destination.

  Yields:
    The staging directory.
  """
  directory = os.path.abspath(directory)
  parent, base = os.path.split(directory)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(dir=parent, prefix=f".{base}.")
  os.chmod(staging, 0o755)
  try:
    yield staging
    old = None
    if os.path.exists(directory):
      old = tempfile.mkdtemp(dir=parent, prefix=f".{base}.old.")
      os.replace(directory, old)  # Onto an empty directory: allowed.
    try:
      os.replace(staging, directory)
    except OSError:
      if old is not None:
        os.replace(old, directory)
      raise
    if old is not None:
      shutil.rmtree(old, ignore_errors=True)
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def _classes_text(classes: Sequence[str]) -> str:
  """The class list in `labels.read_class_file`'s format."""
  return "".join(f"{name}\n" for name in classes)


def _write_name_based(model: two_stream.TwoStreamI3d,
                      tensors: Mapping[str, np.ndarray], directory: str,
                      classes: Sequence[str],
                      preprocessing: Optional[Mapping[str, Any]]) -> str:
  """Writes `export_name_based`'s directory from tensors already read."""
  provenance = {
      "source": "i3d.export",
      "layout": "DeepMind kinetics-i3d, name-based (tf.compat.v1.train.Saver)",
      "streams": ",".join(model.streams),
      "num_classes": str(model.num_classes),
  }
  with _replaced_directory(directory) as staging:
    # write_checkpoint_dir renames its own staging directory onto ours; the
    # class list is then added before the whole directory moves into place.
    checkpoints.write_checkpoint_dir(tensors, staging, provenance)
    fileio.write_text(os.path.join(staging, CLASSES_FILE),
                      _classes_text(classes))
    if preprocessing is not None:
      fileio.write_json(os.path.join(staging, PREPROCESSING_FILE),
                        preprocessing)
  prefix = os.path.join(os.path.abspath(directory), checkpoints.CHECKPOINT_NAME)
  logging.info("Exported %d tensors (%s) to %s", len(tensors),
               ", ".join(model.streams), prefix)
  return prefix


def export_name_based(
    model: two_stream.TwoStreamI3d, directory: str, classes: Sequence[str],
    preprocessing: Optional[Mapping[str, Any]] = None) -> str:
  """Writes the model as a checkpoint in DeepMind's name-based layout.

  `directory` gets `model.ckpt.{index,data-*}`, `classes.txt` (one class name
  per line, in logit order), `preprocessing.json` (if given) and
  `SOURCE.json`, replacing any previous content atomically.

  Args:
    model: the trained model (variables may be distributed: see
      `model_tensors`).
    directory: the export directory.
    classes: class names in logit order.
    preprocessing: how the model's inputs are made (`TrainConfig.
      preprocessing`); None for a model not trained by train.py.

  Returns:
    The checkpoint prefix, `directory/model.ckpt`.

  Raises:
    ValueError: if the class list does not fit the model or the model is not
      built.
  """
  names = _check_classes(model, classes)
  return _write_name_based(model, model_tensors(model), directory, names,
                           preprocessing)


class _ServingModule(tf.Module):
  """What the SavedModel holds: the model, its signature and class names."""

  def __init__(self, model: two_stream.TwoStreamI3d, classes: Sequence[str],
               crop_size: int, classes_file: str,
               preprocessing_file: Optional[str]):
    """Builds the serving function.

    Args:
      model: a built model with plain (not distributed) variables.
      classes: class names in logit order.
      crop_size: the height and width of the clips the model was trained on.
      classes_file: a file with the class names, saved as an asset.
      preprocessing_file: a JSON file of the preprocessing, saved as an
        asset and as the `preprocessing` string; None for none.
    """
    super().__init__(name="i3d_serving")
    self.model = model
    self.classes = tf.Variable(list(classes), trainable=False, name="classes")
    self.streams = tf.Variable(list(model.streams), trainable=False,
                               name="streams")
    self.crop_size = tf.Variable(crop_size, trainable=False, name="crop_size")
    self.classes_file = tf.saved_model.Asset(classes_file)
    if preprocessing_file is not None:
      with open(preprocessing_file, encoding="utf-8") as f:
        self.preprocessing = tf.Variable(f.read(), trainable=False,
                                         name="preprocessing")
      self.preprocessing_file = tf.saved_model.Asset(preprocessing_file)
    # Any frame size, as predict.py takes: clips larger than the crop (e.g.
    # uncropped frames) are classified fully convolutionally (see
    # `InceptionI3d.logits_positions`).
    specs = {
        stream: tf.TensorSpec(
            [None, None, None, None, streams_lib.CHANNELS[stream]],
            tf.float32, name=stream)
        for stream in model.streams
    }

    @tf.function(input_signature=[specs])
    def serve(inputs: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
      logits = self.model(inputs, is_training=False)
      joint = logits[streams_lib.JOINT]
      outputs = {JOINT_LOGITS: joint, PROBABILITIES: tf.nn.softmax(joint)}
      for stream in self.model.streams:
        outputs[f"{stream}_logits"] = logits[stream]
      return outputs

    self.serve = serve
    # `loaded(inputs)` and hub.KerasLayer call the restored `__call__`.
    self.__call__ = serve


def _is_distributed(model: two_stream.TwoStreamI3d) -> bool:
  return any(isinstance(v, tf.distribute.DistributedValues)
             for v in model.variables)


def _plain_copy(model: two_stream.TwoStreamI3d,
                tensors: Mapping[str, np.ndarray]) -> two_stream.TwoStreamI3d:
  """A new model of the same shape with plain variables holding `tensors`.

  A SavedModel should not carry `tf.distribute` variables: it is loaded
  without the strategy.
  """
  copy = two_stream.TwoStreamI3d(model.num_classes, tuple(model.streams))
  for stream, stream_model in copy.streams.items():
    prefix = checkpoints.stream_scope(stream) + "/"
    checkpoints.restore_tensors(
        stream_model, stream,
        {n: v for n, v in tensors.items() if n.startswith(prefix)},
        include_logits=True, source=f"the exported {stream} stream")
  return copy


def _write_saved_model(model: two_stream.TwoStreamI3d, directory: str,
                       classes: Sequence[str], crop_size: int,
                       preprocessing: Optional[Mapping[str, Any]]) -> str:
  """Writes `export_saved_model`'s directory for a model of plain variables."""
  with tempfile.TemporaryDirectory() as scratch:
    classes_file = os.path.join(scratch, CLASSES_FILE)
    fileio.write_text(classes_file, _classes_text(classes))
    preprocessing_file = None
    if preprocessing is not None:
      preprocessing_file = os.path.join(scratch, PREPROCESSING_FILE)
      fileio.write_text(preprocessing_file,
                        json.dumps(dict(preprocessing), indent=2) + "\n")
    module = _ServingModule(model, classes, crop_size, classes_file,
                            preprocessing_file)
    with _replaced_directory(directory) as staging:
      tf.saved_model.save(
          module, staging,
          signatures={SIGNATURE_KEY: module.serve.get_concrete_function()})
  logging.info("Exported a SavedModel (%s, %dx%d clips) to %s",
               ", ".join(model.streams), crop_size, crop_size, directory)
  return os.path.abspath(directory)


def _check_crop_size(crop_size: int) -> None:
  if crop_size < 1:
    raise ValueError(f"crop_size must be >= 1, got {crop_size}")


def export_saved_model(
    model: two_stream.TwoStreamI3d, directory: str, classes: Sequence[str],
    crop_size: int, preprocessing: Optional[Mapping[str, Any]] = None) -> str:
  """Writes the model as a SavedModel with a `serving_default` signature.

  The SavedModel holds the model's variables (copied into plain variables if
  they are distributed); see the module docstring for the signature.
  `directory` is replaced atomically.

  Args:
    model: the trained model (variables may be distributed: see
      `model_tensors`).
    directory: the SavedModel directory.
    classes: class names in logit order.
    crop_size: height and width of the input clips, as in training.
    preprocessing: how the model's inputs are made (`TrainConfig.
      preprocessing`); None for a model not trained by train.py.

  Returns:
    The SavedModel directory.

  Raises:
    ValueError: if the class list does not fit the model, the model is not
      built or the crop size is not positive.
  """
  _check_crop_size(crop_size)
  names = _check_classes(model, classes)
  _check_exportable(model)
  if _is_distributed(model):
    model = _plain_copy(model, model_tensors(model))
  return _write_saved_model(model, directory, names, crop_size, preprocessing)


def export_all(model: two_stream.TwoStreamI3d, directory: str,
               classes: Sequence[str], crop_size: int,
               preprocessing: Optional[Mapping[str, Any]] = None
               ) -> ExportPaths:
  """Writes both exports under `directory/export/`.

  The variables are read once (`model_tensors`), for both exports.

  Args:
    model: the trained model (variables may be distributed: see
      `model_tensors`).
    directory: a train_dir (or any directory); the exports go to
      `export/deepmind_checkpoint/` and `export/saved_model/` in it.
    classes: class names in logit order.
    crop_size: height and width of the input clips, as in training.
    preprocessing: how the model's inputs are made (`TrainConfig.
      preprocessing`), saved in both exports; None for a model not trained
      by train.py.

  Returns:
    The paths written.

  Raises:
    ValueError: if the class list does not fit the model, the model is not
      built or the crop size is not positive.
  """
  _check_crop_size(crop_size)
  names = _check_classes(model, classes)
  tensors = model_tensors(model)
  export_dir = os.path.join(directory, EXPORT_SUBDIR)
  prefix = _write_name_based(
      model, tensors, os.path.join(export_dir, DEEPMIND_CHECKPOINT_SUBDIR),
      names, preprocessing)
  serving_model = (_plain_copy(model, tensors) if _is_distributed(model)
                   else model)
  saved_model = _write_saved_model(
      serving_model, os.path.join(export_dir, SAVED_MODEL_SUBDIR), names,
      crop_size, preprocessing)
  return ExportPaths(deepmind_checkpoint=prefix, saved_model=saved_model)


def export_train_dir(train_dir: str,
                     checkpoint: Optional[str] = None) -> ExportPaths:
  """Exports a training run's model (its latest checkpoint by default).

  Args:
    train_dir: a train.py train_dir.
    checkpoint: a checkpoint of it (its prefix, one of its files or its
      directory); default the latest.

  Returns:
    The paths written under `train_dir/export/`.

  Raises:
    FileNotFoundError: if train_dir has no config or no checkpoint.
    ValueError: if `checkpoint` names no checkpoint or does not fit the run.
  """
  # Imported here: loading a run pulls in the data pipeline, which exporting
  # an in-memory model does not need.
  from i3d.eval import runs as eval_runs  # pylint: disable=g-import-not-at-top
  model, config = eval_runs.load_trained_model(train_dir, checkpoint)
  config = dataclasses.replace(
      config, preprocess=eval_runs.run_preprocess_config(config, train_dir))
  return export_all(model, train_dir, config.classes, config.crop_size,
                    config.preprocessing())


def _define_flags() -> None:
  # Defined only when run as a program, so that importing this module from
  # train.py does not clash with its own --train_dir.
  flags.DEFINE_string("train_dir", None, "The training directory to export.")
  flags.DEFINE_string("checkpoint", None, "A checkpoint of train_dir: its "
                      "prefix (DIR/ckpt/ckpt-N), one of its files (.index, "
                      ".data-*) or its directory (default: the latest).")
  flags.mark_flag_as_required("train_dir")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  try:
    paths = export_train_dir(flags.FLAGS.train_dir, flags.FLAGS.checkpoint)
  except (FileNotFoundError, ValueError, RuntimeError) as e:
    sys.exit(f"error: {e}")
  print(paths.deepmind_checkpoint)
  print(paths.saved_model)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
