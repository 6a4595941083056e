"""Shared helpers of the benchmarks: rows with same-run baselines, output.

Follows `benchmarks/data_pipeline.py`'s conventions: every row is
{"group", "name", "value", "unit", "baseline", "ratio"}, where `ratio` is the
row's value over its baseline row's value, measured in the same run (so a
ratio above 1 is faster for rates, slower for times). Each benchmark prints a
readable table, then one JSON line that also records the machine, the settings
and the load average (the 2-core benchmark machine is shared: read ratios,
not absolute figures).
"""

import datetime
import json
import os
import platform
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

# Before any benchmark imports TensorFlow, as the scripts do: i3d turns
# TensorFlow's oneDNN kernels on (see i3d/__init__.py).
import i3d  # pylint: disable=unused-import


def machine() -> str:
  """The machine in words: processor and CPU count (and GPUs, if imported)."""
  text = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.startswith("model name"):
          text = f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} CPUs"
          break
  except OSError:
    pass
  return text


def load_average() -> List[float]:
  """The 1, 5 and 15 minute load averages, rounded."""
  return [round(x, 2) for x in os.getloadavg()]


class Rows:
  """Benchmark rows, each read against a baseline row of the same run."""

  def __init__(self):
    self.rows: List[Dict[str, Any]] = []

  def add(self, group: str, name: str, value: float, unit: str,
          baseline: Optional[str] = None, **extra: Any) -> Dict[str, Any]:
    """Adds a row; `baseline` names an earlier row (default: itself).

    Args:
      group: the table section, e.g. "forward".
      name: the row's unique name.
      value: the measurement.
      unit: its unit, e.g. "clips/s".
      baseline: the name of the row this one is compared with.
      **extra: more fields for the JSON (e.g. "ms_per_step").

    Returns:
      The row.
    """
    base = next((r for r in self.rows if r["name"] == baseline), None)
    ratio = (round(value / base["value"], 3)
             if base and base["value"] else 1.0)
    row = {"group": group, "name": name, "value": round(value, 4),
           "unit": unit, "baseline": baseline or name, "ratio": ratio,
           "load": round(os.getloadavg()[0], 2), **extra}
    self.rows.append(row)
    return row

  def print_table(self, title: str, note_fields: Sequence[str] = ()) -> None:
    """Prints the rows as a table, ratios against their baselines."""
    print(title)
    width = max([44] + [len(r["name"]) for r in self.rows])
    print(f"{'stage':<10} {'measurement':<{width}} {'value':>10} "
          f"{'unit':<10} ratio  (vs. baseline)")
    for row in self.rows:
      notes = ", ".join(f"{k} {row[k]}" for k in note_fields
                        if row.get(k) is not None)
      print(f"{row['group']:<10} {row['name']:<{width}} {row['value']:>10.3f} "
            f"{row['unit']:<10} {row['ratio']:5.2f}x ({row['baseline']})"
            + (f"  [{notes}]" if notes else ""))

  def emit_json(self, benchmark: str, settings: Mapping[str, Any],
                **extra: Any) -> None:
    """Prints the one JSON line of the run."""
    print(json.dumps({
        "benchmark": benchmark,
        "machine": machine(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "loadavg": load_average(),
        "settings": dict(settings),
        "results": self.rows,
        **extra,
    }))


def quiet_tensorflow_logs() -> None:
  """Hides TensorFlow's C++ info lines (set before importing TensorFlow)."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


DEFAULT_RGB_CHECKPOINT = "checkpoints/rgb_scratch/model.ckpt"


def rgb_checkpoint(path: str, workdir: str) -> str:
  """The RGB weights to start from: `path`, or random ones.

  Speed does not depend on the weights, so a machine without the Kinetics
  weights (and without the network to fetch them) runs on random ones.

  Args:
    path: a checkpoint prefix, or "random".
    workdir: where random weights are written.

  Returns:
    A DeepMind-layout RGB checkpoint prefix.
  """
  if path != "random" and os.path.exists(path + ".index"):
    return path
  from i3d import checkpoints  # pylint: disable=g-import-not-at-top
  if path != "random":
    print(f"{path} not found: using random weights")
  return checkpoints.write_random_checkpoint(
      os.path.join(workdir, "random_rgb"))


def grappler_options(options: Mapping[str, bool]) -> Callable[[], None]:
  """Sets graph-optimizer options; returns a function that restores them.

  The options are read when a tf.function's graph is instantiated, which
  happens again when they change: set them before the first (warm-up) call.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  before = tf.config.optimizer.get_experimental_options()
  tf.config.optimizer.set_experimental_options(dict(options))

  def restore() -> None:
    tf.config.optimizer.set_experimental_options(
        {k: before.get(k, False) for k in options})
  return restore
