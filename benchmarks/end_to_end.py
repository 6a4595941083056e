r"""Benchmark of the main job end to end: wall time per phase.

From the repository root:

  PYTHONPATH=. python3 benchmarks/end_to_end.py     # the full demo (~13 min)
  PYTHONPATH=. python3 benchmarks/end_to_end.py \
      --job_flags=--synthetic_clips_per_class=4,--num_steps=20   # ~3 min

Runs `train.py --flagfile=<--job_flagfile>` in a subprocess, by default in a
fresh working directory: the flagfile's --manifest, --cache_dir and
--train_dir are pointed there, so the synthetic data are generated, prepared
and cached from scratch (the Kinetics weights in checkpoints/ are reused;
`--fresh_weights` fetches them again into the working directory, which needs
the network). `--workdir=DIR` keeps and reuses a directory instead: a second
run then measures what a rerun costs (everything cached, training resumed).

Each output line is timestamped as it arrives; the phases are cut at these
log lines of the job:
  startup   process start (imports) to the first phase;
  generate  "N of M clips to render" (i3d_demo.synthetic) to the next phase;
  prepare   "Preparing N videos" to the "N of M videos ready" summary;
  model     the summary to "Computing frozen features" or the training loop:
            building the two streams, fetching / restoring the weights;
  flow_statistics  the flow stream's batch-norm statistics re-estimated
            on training clips ("Restored N variables of Flow from the Flow
            model", its copy, to the next phase);
  features  "Frozen features: ... to compute" to the start of the training
            loop (when the first "step" line's steps/s says the loop
            started), or to the "Frozen features: N of N videos done" line;
  train_setup that line to the start of the training loop (saving the
            features, building the feature dataset);
  train     the training loop, to the last "step N/N" line (mid-run
            evaluations, if any, included);
  checkpoint the last step line to "Evaluating N videos" (the final
            checkpoint, setting up the evaluation);
  eval      to the last "eval at step" line (the held-out videos);
  finish    that line to the job's exit (report, metrics, exports).
A phase whose start line is missing is merged into the phase before it.
Prints a readable table, then one JSON line; `--log` keeps the job's output.
"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags

from benchmarks import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_JOB_FLAGFILE = flags.DEFINE_string(
    "job_flagfile", os.path.join(ROOT, "configs", "demo.cfg"),
    "The main job's flagfile.")
_JOB_FLAGS = flags.DEFINE_list(
    "job_flags", [], "More flags for train.py, after the flagfile (they "
    "win), e.g. --synthetic_clips_per_class=4,--num_steps=20.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Run in (and keep) this directory; rerunning with the "
    "same one measures a resumed job. Default: a fresh temporary one.")
_FRESH_WEIGHTS = flags.DEFINE_bool(
    "fresh_weights", False, "Fetch the Kinetics weights again (into the "
    "working directory; needs the network) instead of using checkpoints/.")
_OWN_PATHS = flags.DEFINE_bool(
    "own_paths", False, "Keep the flagfile's --manifest, --cache_dir and "
    "--train_dir (relative to the repository root: reuses what is there).")
_LOG = flags.DEFINE_string("log", None, "Write the job's output here.")
_TIMEOUT = flags.DEFINE_integer("timeout_s", 3600, "Kill the job after this.")
_FROM_LOG = flags.DEFINE_string(
    "from_log", None, "Analyse a log written by --log instead of running.")

PHASES = ("startup", "generate", "prepare", "model", "flow_statistics",
          "features", "train_setup", "train", "checkpoint", "eval", "finish")

_FEATURES_DONE = re.compile(
    r"\] (?:Features: (\d+)/(\d+) batches|Frozen features: (\d+) of (\d+) "
    r"videos done)")
_STEP = re.compile(r"\] step (\d+)/(\d+) .* ([\d.]+) steps/s")
_RESUMED = re.compile(r"\] Resumed from .* at step (\d+)")


def run_job(command: Sequence[str], cwd: str,
            timeout_s: float) -> Tuple[List[Tuple[float, str]], int, float]:
  """Runs the job; returns ([(seconds since start, line)], exit code, s)."""
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  env["PYTHONPATH"] = os.pathsep.join(
      [ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p])
  start = time.monotonic()
  lines = []
  with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, text=True,
                        bufsize=1) as process:
    assert process.stdout is not None
    for line in process.stdout:
      lines.append((time.monotonic() - start, line.rstrip("\n")))
      if time.monotonic() - start > timeout_s:
        process.kill()
        break
    code = process.wait()
  return lines, code, time.monotonic() - start


def _first(lines: Sequence[Tuple[float, str]], pattern: str,
           after: float = -1.0) -> Optional[float]:
  regex = re.compile(pattern)
  return next((t for t, line in lines if t > after and regex.search(line)),
              None)


def _last(lines: Sequence[Tuple[float, str]], pattern: str,
          after: float = -1.0) -> Optional[float]:
  regex = re.compile(pattern)
  times = [t for t, line in lines if t > after and regex.search(line)]
  return times[-1] if times else None


def phase_starts(lines: Sequence[Tuple[float, str]]) -> Dict[str, float]:
  """When each phase began (seconds since the job started), as found."""
  starts: Dict[str, Optional[float]] = {"startup": 0.0}
  starts["generate"] = _first(lines, r"\d+ of \d+ clips to render")
  starts["prepare"] = _first(lines, r"Preparing \d+ videos")
  starts["model"] = _first(lines, r"\d+ of \d+ videos ready in",
                           after=starts["prepare"] or -1.0)
  if starts["model"] is None:  # --noprepare: the model comes first.
    starts["model"] = _first(lines, r"Restored \d+ variables|is already in "
                             r"place|Running .* pip download")
  starts["flow_statistics"] = _first(
      lines, r"Restored \d+ variables of Flow from the Flow model")
  starts["features"] = _first(lines, r"Computing frozen features|Frozen "
                              r"features: .* videos to compute")
  for t, line in lines:  # The last batch's progress line, if logged.
    match = _FEATURES_DONE.search(line)
    if match:
      done, total = [g for g in match.groups() if g is not None]
      if done == total:
        starts["train_setup"] = t
  first_step = 0
  for _, line in lines:
    match = _RESUMED.search(line)
    if match:
      first_step = int(match.group(1))
  step_lines = [(t, _STEP.search(line)) for t, line in lines
                if _STEP.search(line)]
  if step_lines:
    t, match = step_lines[0]
    step, rate = int(match.group(1)), float(match.group(3))
    # Trainer.train logs (step - first_step) / (time since the loop began).
    starts["train"] = t - (step - first_step) / rate if rate > 0 else t
    starts["checkpoint"] = step_lines[-1][0]
    starts["eval"] = _first(lines, r"\] Evaluating \d+ videos",
                            after=starts["checkpoint"])
    starts["finish"] = _last(lines, r"\] eval at step",
                             after=starts["checkpoint"])
  return {k: v for k, v in starts.items() if v is not None}


def phase_durations(starts: Dict[str, float],
                    total: float) -> Dict[str, float]:
  """Each found phase's wall time: until the next found phase starts."""
  ordered = sorted((t, p) for p, t in starts.items())
  return {phase: (ordered[i + 1][0] if i + 1 < len(ordered) else total) - t
          for i, (t, phase) in enumerate(ordered)}


def read_log(path: str) -> Tuple[List[Tuple[float, str]], int, float,
                                  List[str], str]:
  """Reads a --log file: (lines, exit code, total s, command, cwd)."""
  lines, code, total, command, cwd = [], 0, 0.0, [], ""
  with open(path, encoding="utf-8") as f:
    for text in f:
      text = text.rstrip("\n")
      if text.startswith("# command: "):
        command = text[len("# command: "):].split(" ")
      elif text.startswith("# cwd: "):
        cwd = text[len("# cwd: "):]
      elif text.startswith("# exit "):
        code, total = int(text.split()[2]), float(text.split()[4])
      elif text[:9].strip():
        lines.append((float(text[:9]), text[10:]))
  if not total and lines:  # A log without its footer: its last line.
    total = lines[-1][0]
  return lines, code, total, command, cwd


def job_command(workdir: str) -> Tuple[List[str], str]:
  """The train.py command line and the directory to run it in."""
  command = [sys.executable, os.path.join(ROOT, "train.py"),
             f"--flagfile={_JOB_FLAGFILE.value}"]
  if not _OWN_PATHS.value:
    command += [
        f"--manifest={os.path.join(workdir, 'synthetic', 'manifest.csv')}",
        f"--cache_dir={os.path.join(workdir, 'synthetic_cache')}",
        f"--train_dir={os.path.join(workdir, 'train')}"]
  command += list(_JOB_FLAGS.value)
  # Weights are looked for in checkpoints/ relative to the working directory.
  return command, (workdir if _FRESH_WEIGHTS.value and not _OWN_PATHS.value
                   else ROOT)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError("Too many command-line arguments.")
  load_before = common.load_average()
  if _FROM_LOG.value:
    lines, code, total, command, cwd = read_log(_FROM_LOG.value)
  else:
    workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="i3d_end_to_end_")
    os.makedirs(workdir, exist_ok=True)
    try:
      command, cwd = job_command(workdir)
      print("Running", " ".join(command), f"(in {cwd})", flush=True)
      lines, code, total = run_job(command, cwd, _TIMEOUT.value)
    finally:
      if not _WORKDIR.value:
        shutil.rmtree(workdir, ignore_errors=True)
  if _LOG.value and not _FROM_LOG.value:
    with open(_LOG.value, "w", encoding="utf-8") as f:
      f.write(f"# command: {' '.join(command)}\n# cwd: {cwd}\n")
      f.writelines(f"{t:9.2f} {line}\n" for t, line in lines)
      f.write(f"# exit {code} after {total:.2f} s\n")
  starts = phase_starts(lines)
  durations = phase_durations(starts, total)
  rows = common.Rows()
  for phase in PHASES:
    if phase in durations:
      rows.add("phase", phase, durations[phase], "s", "total",
               start_s=round(starts[phase], 2))
  rows.add("phase", "total", total, "s", "total")
  for row in rows.rows[:-1]:  # Shares of the total.
    row["ratio"] = round(row["value"] / total, 3)
  summary: Dict[str, Any] = {"exit_code": code}
  steps = [_STEP.search(line) for _, line in lines if _STEP.search(line)]
  if steps:
    summary["last_step_line_steps_per_s"] = float(steps[-1].group(3))
  report = [line for _, line in lines if "top-1" in line.lower()]
  if report:
    summary["eval_line"] = report[-1].split("] ", 1)[-1]
  settings = {"command": " ".join(command), "cwd": cwd,
              "from_log": _FROM_LOG.value,
              "fresh_workdir": not _WORKDIR.value,
              "fresh_weights": _FRESH_WEIGHTS.value,
              "load_before": load_before}
  rows.print_table(f"End-to-end benchmark on {common.machine()}; load "
                   f"{load_before} -> {common.load_average()}; exit code "
                   f"{code}; ratio = share of the total",
                   note_fields=("start_s",))
  print(summary)
  rows.emit_json("end_to_end", settings, summary=summary)
  if code != 0:
    tail = "\n".join(line for _, line in lines[-30:])
    sys.exit(f"The job failed (exit {code}):\n{tail}")


if __name__ == "__main__":
  app.run(main)
