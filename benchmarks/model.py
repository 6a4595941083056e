r"""Benchmark of the model: forward and training-step time, by execution mode.

From the repository root:

  PYTHONPATH=. python3 benchmarks/model.py          # quick subset (~3 min)
  PYTHONPATH=. python3 benchmarks/model.py --full   # every row (hours on CPU)
  PYTHONPATH=. python3 benchmarks/model.py --streams=rgb --shapes=64x224 \
      --batch_sizes=1,4 --modes=train --variants=graph,amp

What is timed, on random clips in [-1, 1] (speed does not depend on the data)
with the Kinetics RGB weights (flow: cross-modality init):
  forward  the two-stream model's inference forward (`TwoStreamI3d`, batch
           norm in inference mode, logits of each stream and joint);
  train    one training step through the Trainer's own `_make_train_step`,
           fed by an iterator over one fixed batch as in `Trainer.train`:
           forward, backward, weight decay and the MomentumSGD update of the
           trainable variables (`--trainable`, all by default), dropout on
           and batch norm frozen as the Trainer's defaults.
Each case (stream, frames x crop, batch, mode) runs in these variants, each
read against `graph` measured in the same run:
  graph       tf.function, TensorFlow's default (oneDNN kernels on x86 CPUs);
  eager       the same step run eagerly (tf.config.run_functions_eagerly);
  xla         tf.function(jit_compile=True) of the same step (the batch is
              passed as tensors: XLA cannot compile an iterator);
  amp         automatic mixed precision by Grappler's graph rewrite: on a GPU
              float16 (`auto_mixed_precision`) with the Trainer's static loss
              scale, as train.py --mixed_precision; on a CPU bfloat16 through
              oneDNN (`auto_mixed_precision_onednn_bfloat16`, no loss scale);
  onednn_off  graph with TF_ENABLE_ONEDNN_OPTS=0 (plain Eigen kernels), in a
              subprocess since the switch is read at import (CPU only; not
              interleaved with the others).
The variants of a case are warmed up (traced, compiled) in turn, then their
timed calls are interleaved, so that load changes on a shared machine hit
them alike; in training each variant keeps its own copy of the weights and
optimizer state, all starting from the same values, so their losses compare.
Values are clips/s (ratio > 1: faster than graph); the rows also hold the
median ms per call, the first call's time (tracing, graph optimisation, XLA
compilation), the relative error of the logits against graph's (forward) and
the losses (train). `--check_loss` fails the run unless every training
variant's mean loss over its last 3 steps is under that over its first 3.
"""

# The benchmarks drive the Trainer's internals (its step, its datasets).
# pylint: disable=protected-access

import dataclasses
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from absl import app
from absl import flags

from benchmarks import common

common.quiet_tensorflow_logs()

# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np
import tensorflow as tf

from i3d import config as config_lib
from i3d import labels
from i3d import streams as streams_lib
from i3d.train import loop as train_loop
from i3d.train import steps as train_steps
# pylint: enable=g-import-not-at-top,wrong-import-position

VARIANTS = ("graph", "eager", "xla", "amp", "onednn_off")
# Grappler's automatic mixed precision: float16 on GPUs, bfloat16 on CPUs.
AMP_OPTION = ("auto_mixed_precision" if tf.config.list_physical_devices("GPU")
              else "auto_mixed_precision_onednn_bfloat16")
MODES = ("forward", "train")

_FULL = flags.DEFINE_bool(
    "full", False, "Every row: rgb and flow, 16x224, 64x224 and 32x112, "
    "batch 1 and 4, forward and train, all variants (onednn_off trains only "
    "in the smallest case); an hour or more on 2 CPU cores.")
_STREAMS = flags.DEFINE_list(
    "streams", None, "Streams: rgb, flow, joint (default: rgb,flow).")
_SHAPES = flags.DEFINE_list(
    "shapes", None, "Clip shapes as FRAMESxCROP, e.g. 16x224,64x224.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", None, "Batch sizes.")
_MODES = flags.DEFINE_list("modes", None, f"Of {MODES}.")
_VARIANTS = flags.DEFINE_list("variants", None, f"Of {VARIANTS}.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per variant.")
_WARMUP = flags.DEFINE_integer(
    "warmup", 1, "Untimed calls first (the first traces/compiles).")
_SETTINGS = config_lib.define_flags(
    config_lib.TrainConfig, ["trainable", "learning_rate", "dropout_keep_prob"],
    defaults={"trainable": "all", "learning_rate": 0.0003},
    docs={"learning_rate": "Constant learning rate of the timed steps.",
          "dropout_keep_prob": "As train.py's (0.5); 1.0 makes the losses "
                               "of the fixed batch fall smoothly (the speed "
                               "is the same)."})
_TRAINABLE, _LEARNING_RATE, _DROPOUT_KEEP_PROB = (
    _SETTINGS[name] for name in ("trainable", "learning_rate",
                                 "dropout_keep_prob"))
_RGB_CHECKPOINT = flags.DEFINE_string(
    "rgb_checkpoint", common.DEFAULT_RGB_CHECKPOINT,
    "Kinetics RGB weights (flow: cross-modality init), or 'random'; random "
    "weights are used if the file is missing.")
_CHECK_LOSS = flags.DEFINE_bool(
    "check_loss", False, "Exit 1 unless the loss fell in every training "
    "variant (needs --repeats + --warmup of 6 or more).")
_OUTPUT_JSON = flags.DEFINE_string(
    "output_json", None, "Also write the JSON line to this file.")
_CHILD_CASE = flags.DEFINE_string(
    "child_case", None, "Internal: time one case in graph mode and print it "
    "as JSON (the onednn_off subprocess).")

# Quick default: (stream, frames, crop, batch, mode, variants).
_QUICK_CASES: Tuple[Tuple[str, int, int, int, str, Tuple[str, ...]], ...] = (
    ("rgb", 16, 224, 1, "forward", VARIANTS),
    ("rgb", 16, 224, 1, "train", ("graph", "eager", "xla", "amp")),
    ("flow", 16, 224, 1, "forward", ("graph", "amp")),
    ("flow", 16, 224, 1, "train", ("graph",)),
    ("rgb", 32, 112, 4, "forward", ("graph", "amp")),
    ("rgb", 32, 112, 4, "train", ("graph",)),
)


def on_gpu() -> bool:
  return bool(tf.config.list_physical_devices("GPU"))


def parse_shape(text: str) -> Tuple[int, int]:
  frames, crop = text.lower().split("x")
  return int(frames), int(crop)


def plan() -> List[Tuple[str, int, int, int, str, Tuple[str, ...]]]:
  """The cases to run, from the flags."""
  explicit = any(f is not None for f in (_STREAMS.value, _SHAPES.value,
                                         _BATCH_SIZES.value, _MODES.value,
                                         _VARIANTS.value))
  if not explicit and not _FULL.value:
    cases = list(_QUICK_CASES)
  else:
    streams = _STREAMS.value or ["rgb", "flow"]
    shapes = _SHAPES.value or (["16x224", "64x224", "32x112"] if _FULL.value
                               else ["16x224"])
    batches = _BATCH_SIZES.value or (["1", "4"] if _FULL.value else ["1"])
    modes = _MODES.value or list(MODES)
    variants = tuple(_VARIANTS.value or VARIANTS)
    for name in variants:
      if name not in VARIANTS:
        raise app.UsageError(f"Unknown variant {name!r}: use {VARIANTS}")
    cases = [(s, *parse_shape(shape), int(b), m, variants)
             for s in streams for shape in shapes for b in batches
             for m in modes]
    if _FULL.value and not _VARIANTS.value:
      # Without oneDNN a training step is ~50x slower (Eigen's Conv3D
      # gradients): only the smallest training case runs it.
      smallest = min((c[1] * c[2] ** 2 * c[3], i) for i, c in enumerate(cases)
                     if c[4] == "train")[1] if "train" in modes else None
      cases = [c if c[4] == "forward" or i == smallest else
               c[:5] + (tuple(v for v in c[5] if v != "onednn_off"),)
               for i, c in enumerate(cases)]
  if on_gpu():  # The oneDNN switch is a CPU matter.
    cases = [c[:5] + (tuple(v for v in c[5] if v != "onednn_off"),)
             for c in cases]
  return cases


@dataclasses.dataclass
class Variant:
  """One way of running a case, and what it needs set around each call."""
  name: str
  run: Callable[[], Any]
  options: Dict[str, bool]  # Grappler options while it runs.
  eager: bool = False
  config: Dict[str, Any] = dataclasses.field(default_factory=dict)
  state: Optional[List[tf.Tensor]] = None  # Its own weights (training).


class ModelBench:
  """One Trainer per stream; times its forward and training step."""

  def __init__(self, workdir: str, rgb_checkpoint: str):
    self.workdir = workdir
    self.rgb_checkpoint = rgb_checkpoint
    self.trainers: Dict[str, train_loop.Trainer] = {}
    self.initial: Dict[str, List[tf.Tensor]] = {}

  def trainer(self, stream: str) -> train_loop.Trainer:
    if stream not in self.trainers:
      config = config_lib.TrainConfig(
          cache_dir=self.workdir,  # Not read: the data here is random.
          train_dir=tempfile.mkdtemp(dir=self.workdir),
          classes=labels.EXERCISE_CLASSES, stream=stream,
          trainable=_TRAINABLE.value, learning_rate=_LEARNING_RATE.value,
          lr_schedule="constant", feature_cache=False,
          dropout_keep_prob=_DROPOUT_KEEP_PROB.value,
          rgb_checkpoint=self.rgb_checkpoint, export=False)
      self.trainers[stream] = train_loop.Trainer(config)
      self.initial[stream] = self.snapshot(stream)
    return self.trainers[stream]

  def state_variables(self, stream: str) -> List[tf.Variable]:
    """Weights, batch-norm statistics, optimizer accumulators and step."""
    trainer = self.trainers[stream]
    return (list(trainer.model.variables) + trainer.optimizer.accumulators +
            [trainer.step])

  def snapshot(self, stream: str) -> List[tf.Tensor]:
    # Reads are copy-on-write: later updates of the variables leave them be.
    return [tf.identity(v) for v in self.state_variables(stream)]

  def load(self, stream: str, state: Sequence[tf.Tensor]) -> None:
    for variable, value in zip(self.state_variables(stream), state):
      variable.assign(value)

  @staticmethod
  def batch(stream: str, frames: int, crop: int,
            batch: int) -> Dict[str, tf.Tensor]:
    rng = np.random.default_rng(0)
    inputs = {"label": tf.constant(rng.integers(
        0, len(labels.EXERCISE_CLASSES), batch), tf.int32)}
    for name in streams_lib.parse_streams(stream):
      channels = streams_lib.CHANNELS[name]
      inputs[name] = tf.constant(rng.uniform(
          -1, 1, (batch, frames, crop, crop, channels)).astype(np.float32))
    return inputs

  def variant(self, stream: str, inputs: Mapping[str, tf.Tensor], mode: str,
              name: str) -> Variant:
    """Builds one variant of a case (traced on its first call)."""
    trainer = self.trainer(stream)
    options = {AMP_OPTION: name == "amp"}
    if mode == "forward":
      features = {s: inputs[s] for s in trainer.config.streams}
      forward = lambda x: trainer.model(x, is_training=False)
      if name != "eager":
        forward = tf.function(forward, jit_compile=name == "xla")

      def run_forward() -> np.ndarray:
        outputs = forward(features)
        return np.concatenate([outputs[k].numpy() for k in sorted(outputs)])
      return Variant(name, run_forward, options, eager=False)
    # The step reads the Trainer's config when it is traced: the loss is
    # divided by batch_size, and scaled when mixed_precision (float16).
    config = {"batch_size": int(inputs["label"].shape[0]),
              "mixed_precision": name == "amp" and on_gpu()}
    state = list(self.initial[stream])
    if name == "xla":  # XLA cannot compile the iterator: pass the batch.
      @tf.function(jit_compile=True)
      def xla_step(batch_inputs):
        trainer.learning_rate.assign(train_steps.learning_rate_at(
            trainer.config, trainer.step))
        outputs = trainer.strategy.run(
            train_steps.replica_step,
            args=(trainer.state, trainer.config, batch_inputs, False))
        trainer.step.assign_add(1)
        return outputs["loss"]
      return Variant(name, lambda: float(xla_step(inputs)), options,
                     config=config, state=state)
    # The Trainer's own step, fed by an iterator as in Trainer.train.
    data = tf.data.Dataset.from_tensors(dict(inputs)).repeat()
    iterator = iter(trainer.strategy.experimental_distribute_dataset(data))
    step = train_steps.make_train_step(trainer.strategy, trainer.state,
                                       trainer.config, False)
    return Variant(name, lambda: float(step(iterator)["loss"]), options,
                   eager=name == "eager", config=config, state=state)

  def invoke(self, stream: str, variant: Variant) -> Tuple[Any, float]:
    """Runs one call of a variant in its settings; returns (result, s)."""
    trainer = self.trainers[stream]
    if variant.state is not None:
      self.load(stream, variant.state)
    saved = {k: getattr(trainer.config, k) for k in variant.config}
    for key, value in variant.config.items():
      setattr(trainer.config, key, value)
    restore = common.grappler_options(variant.options)
    tf.config.run_functions_eagerly(variant.eager)
    try:
      start = time.perf_counter()
      result = variant.run()
      seconds = time.perf_counter() - start
    finally:
      tf.config.run_functions_eagerly(False)
      restore()
      for key, value in saved.items():
        setattr(trainer.config, key, value)
    if variant.state is not None:
      variant.state = self.snapshot(stream)
    return result, seconds

  def time_case(self, stream: str, frames: int, crop: int, batch: int,
                mode: str, names: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """Times the variants of one case, interleaved.

    Each variant is warmed up (traced, compiled) in turn, then the timed
    calls go round the variants, so that load changes on a shared machine
    hit them alike. In training each variant keeps its own weights.

    Returns:
      {variant: {"first_s", "median_s", "times_s", "losses" or "output"}}.
    """
    self.trainer(stream)
    self.load(stream, self.initial[stream])
    inputs = self.batch(stream, frames, crop, batch)
    variants = [self.variant(stream, inputs, mode, n) for n in names]
    results = {v.name: [] for v in variants}
    times = {v.name: [] for v in variants}
    first = {}
    for variant in variants:
      for i in range(_WARMUP.value):
        result, seconds = self.invoke(stream, variant)
        results[variant.name].append(result)
        if i == 0:
          first[variant.name] = seconds
    for _ in range(_REPEATS.value):
      for variant in variants:
        result, seconds = self.invoke(stream, variant)
        results[variant.name].append(result)
        times[variant.name].append(seconds)
    timings = {}
    for variant in variants:
      timing = {"first_s": first.get(variant.name, float("nan")),
                "median_s": statistics.median(times[variant.name]),
                "times_s": [round(t, 4) for t in times[variant.name]]}
      if mode == "train":
        timing["losses"] = [round(x, 4) for x in results[variant.name]]
      else:
        timing["output"] = results[variant.name][-1]
      timings[variant.name] = timing
    self.load(stream, self.initial[stream])
    return timings


def time_in_subprocess(case: Mapping[str, Any],
                       env: Mapping[str, str]) -> Dict[str, Any]:
  """Times one graph-mode case in a fresh Python with extra environment."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  command = [sys.executable, os.path.abspath(__file__),
             f"--child_case={json.dumps(dict(case))}",
             f"--repeats={_REPEATS.value}", f"--warmup={_WARMUP.value}",
             f"--trainable={_TRAINABLE.value}",
             f"--learning_rate={_LEARNING_RATE.value}",
             f"--dropout_keep_prob={_DROPOUT_KEEP_PROB.value}",
             f"--rgb_checkpoint={_RGB_CHECKPOINT.value}"]
  full_env = dict(os.environ, **env)
  full_env["PYTHONPATH"] = os.pathsep.join(
      [root] + [p for p in [os.environ.get("PYTHONPATH")] if p])
  result = subprocess.run(command, env=full_env, capture_output=True,
                          text=True, check=False, cwd=root)
  lines = [l for l in result.stdout.splitlines() if l.startswith("{")]
  if result.returncode != 0 or not lines:
    raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
  timing = json.loads(lines[-1])
  if "output" in timing:
    timing["output"] = np.array(timing["output"])
  return timing


def run_child(workdir: str) -> None:
  case = json.loads(_CHILD_CASE.value)
  bench = ModelBench(workdir, common.rgb_checkpoint(_RGB_CHECKPOINT.value,
                                                    workdir))
  timing = bench.time_case(case["stream"], case["frames"], case["crop"],
                           case["batch"], case["mode"], ["graph"])["graph"]
  if "output" in timing:
    timing["output"] = timing["output"].tolist()
  print(json.dumps(timing))


def loss_fell(losses: Sequence[float]) -> Optional[bool]:
  """Whether the mean of the last 3 losses is under that of the first 3."""
  if len(losses) < 6:
    return None
  return bool(np.mean(losses[-3:]) < np.mean(losses[:3]))


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  workdir = tempfile.mkdtemp(prefix="i3d_model_bench_")
  try:
    if _CHILD_CASE.value:
      run_child(workdir)
      return
    cases = plan()
    checkpoint = common.rgb_checkpoint(_RGB_CHECKPOINT.value, workdir)
    bench = ModelBench(workdir, checkpoint)
    rows = common.Rows()
    loss_ok = True
    for stream, frames, crop, batch, mode, variants in cases:
      case_name = f"{stream} {frames}x{crop} b{batch} {mode}"
      names = ["graph"] + [v for v in variants if v not in ("graph",
                                                             "onednn_off")]
      timings = bench.time_case(stream, frames, crop, batch, mode, names)
      if "onednn_off" in variants:
        timings["onednn_off"] = time_in_subprocess(
            {"stream": stream, "frames": frames, "crop": crop,
             "batch": batch, "mode": mode}, {"TF_ENABLE_ONEDNN_OPTS": "0"})
      for variant, timing in timings.items():
        extra: Dict[str, Any] = {
            "ms_per_call": round(timing["median_s"] * 1000, 1),
            "first_call_s": round(timing["first_s"], 2),
            "times_s": timing["times_s"]}
        if variant != "graph" and "output" in timing:
          reference = timings["graph"]["output"]
          error = (np.linalg.norm(timing["output"] - reference) /
                   max(np.linalg.norm(reference), 1e-30))
          extra["rel_err"] = float(f"{error:.2g}")  # Logits vs. graph's.
        if "losses" in timing:
          losses = timing["losses"]
          extra.update(losses=losses, loss_first=losses[0],
                       loss_last=losses[-1], loss_fell=loss_fell(losses))
          loss_ok &= extra["loss_fell"] is not False
        rows.add(mode, f"{case_name} {variant}", batch / timing["median_s"],
                 "clips/s", f"{case_name} graph", **extra)
      gc.collect()
    device = (tf.config.experimental.get_device_details(
        tf.config.list_physical_devices("GPU")[0]).get("device_name", "GPU")
              if on_gpu() else "CPU")
    settings = {"trainable": _TRAINABLE.value, "repeats": _REPEATS.value,
                "warmup": _WARMUP.value, "device": device,
                "rgb_checkpoint": checkpoint,
                "tensorflow": tf.__version__,
                "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")}
    rows.print_table(
        f"Model benchmark on {common.machine()}, {device}; load "
        f"{common.load_average()}; {settings}",
        note_fields=("ms_per_call", "first_call_s", "rel_err", "loss_first",
                     "loss_last"))
    rows.emit_json("model", settings)
    if _OUTPUT_JSON.value:
      with open(_OUTPUT_JSON.value, "w", encoding="utf-8") as f:
        json.dump({"benchmark": "model", "machine": common.machine(),
                   "loadavg": common.load_average(), "settings": settings,
                   "results": rows.rows}, f, indent=1)
    if _CHECK_LOSS.value and not loss_ok:
      sys.exit("The loss did not fall in every training variant")
  finally:
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
