"""Train and eval splits of a dataset, by subject when subjects are known.

A model that has seen a person in training looks far better on that person
than on a new one; measuring generalisation to new people is the point, so
whole subjects go to one side (`split_videos`).
"""

import collections
from typing import Any, Sequence

import numpy as np

from i3d.data import sources as sources_lib

def check_eval_fraction(eval_fraction: float) -> None:
  """Raises DatasetError unless 0 <= eval_fraction < 1."""
  if not 0 <= eval_fraction < 1:
    raise sources_lib.DatasetError(
        f"eval_fraction must be in [0, 1), got {eval_fraction}")


def split_videos(sources: Sequence[sources_lib.VideoSource],
                 eval_fraction: float,
                 seed: int) -> dict[str, Any]:
  """Splits videos into "train" and "eval", deterministically for a seed.

  - If the manifest gave splits, they are used as they are.
  - Else if subjects are known, whole subjects go to eval (in a seeded random
    order) until it holds `eval_fraction` of the videos, so no person is in
    both splits. Videos without a subject count as subjects of their own.
  - Else each class is split on its own (stratified), `eval_fraction` of its
    videos rounded, at least one each way for classes with two or more.

  Args:
    sources: the videos.
    eval_fraction: the fraction of videos for evaluation, in [0, 1).
    seed: the random seed.

  Returns:
    A JSON-ready dict: "method" ("manifest", "subject" or "stratified"),
    "seed", "eval_fraction", and "train" and "eval", each a sorted list of
    relative paths.

  Raises:
    DatasetError: if eval_fraction is outside [0, 1).
  """
  check_eval_fraction(eval_fraction)
  rng = np.random.default_rng(seed)
  ordered = sorted(sources, key=lambda s: s.relpath)
  if any(s.split for s in ordered):
    method = "manifest"
    eval_paths = {s.relpath for s in ordered if s.split == "eval"}
  elif any(s.subject for s in ordered):
    method = "subject"
    groups = collections.defaultdict(list)
    for s in ordered:
      groups[s.subject or f"video:{s.relpath}"].append(s.relpath)
    names = sorted(groups)
    eval_paths = set()
    target = eval_fraction * len(ordered)
    # Stop before the last group, so that train is never empty.
    for name in [names[i] for i in rng.permutation(len(names))][:-1]:
      if len(eval_paths) >= target:
        break
      eval_paths.update(groups[name])
  else:
    method = "stratified"
    eval_paths = set()
    for label in sorted({s.label for s in ordered}):
      paths = [s.relpath for s in ordered if s.label == label]
      num_eval = round(eval_fraction * len(paths))
      if eval_fraction > 0 and len(paths) >= 2:
        num_eval = min(max(num_eval, 1), len(paths) - 1)
      eval_paths.update(
          paths[i] for i in rng.permutation(len(paths))[:num_eval])
  return {
      "method": method,
      "seed": seed,
      "eval_fraction": eval_fraction,
      "train": [s.relpath for s in ordered if s.relpath not in eval_paths],
      "eval": [s.relpath for s in ordered if s.relpath in eval_paths],
  }
