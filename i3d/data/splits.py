"""Train and eval splits, and k folds for cross-validation, by subject.

A model that has seen a person in training looks far better on that person
than on a new one; measuring generalisation to new people is the point, so
whole subjects go to one side of a split (`split_videos`) and, in k-fold
cross-validation (`assign_folds`), every subject is in exactly one eval fold
while the other K - 1 folds train. Within that constraint the folds' class
mixes follow the whole dataset's as closely as the subjects allow.
Leave-one-subject-out is K = the number of subjects.

The assignment is greedy, the criterion of scikit-learn's
`StratifiedGroupKFold`: subjects whose videos are most concentrated on few
classes go first, each to the fold where the per-class share of videos held
out varies least across folds; ties go to the fold with fewest videos. Unlike
scikit-learn (which this project does not depend on for one function: its
tie-break on floating-point equality can leave a fold empty when K equals the
number of subjects, scikit-learn issue #34828), no fold is left empty: adding a
subject to an empty fold raises no class's held-out share above another
fold's, so no fold beats an empty one, and near-ties go to the fold with
fewer videos.

Without subjects, folds over videos (`grouping="video"`) put videos of one
person in train and eval alike, which overstates how well the model does on
new people; they must be asked for explicitly.
"""

import collections
import dataclasses
from typing import Any, Dict, List, Mapping, Protocol, Sequence, Tuple

import numpy as np

from i3d.data import sources as sources_lib

GROUPINGS: Tuple[str, ...] = ("subject", "video")
FOLDS_FILE = "folds.json"
# The group of a video under grouping="video": the video itself.
_VIDEO_GROUP_PREFIX = "video:"
# Imbalances closer than this are equal (far above float64 rounding error).
_TIE_TOLERANCE = 1e-9


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


class Video(Protocol):
  """What fold assignment needs of a video (e.g. a `dataset.CacheEntry`)."""
  path: str
  label: str
  subject: str | None


@dataclasses.dataclass(frozen=True)
class Fold:
  """One fold: the subjects it holds out and the videos of each side.

  Attributes:
    index: the fold's number, from 0.
    eval_subjects: the subjects (groups) evaluated, sorted.
    train_subjects: the other subjects, sorted.
    eval_paths: their videos' paths, sorted.
    train_paths: the training videos' paths, sorted.
  """
  index: int
  eval_subjects: Tuple[str, ...]
  train_subjects: Tuple[str, ...]
  eval_paths: Tuple[str, ...]
  train_paths: Tuple[str, ...]

  def to_json(self) -> Dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()}

  @classmethod
  def from_json(cls, value: Mapping[str, Any]) -> "Fold":
    return cls(**{k: tuple(v) if isinstance(v, list) else v
                  for k, v in value.items()})


def video_groups(videos: Sequence[Video],
                 grouping: str = "subject") -> Dict[str, str]:
  """The group (subject, or the video itself) of each video, by path.

  Args:
    videos: the videos.
    grouping: "subject" (videos of one person stay together) or "video"
      (each video on its own; optimistic, see the module docstring).

  Returns:
    {path: group name}.

  Raises:
    DatasetError: for grouping "subject" when a video has no subject, saying
      why subjects matter and how to give them; for an unknown grouping.
  """
  if grouping not in GROUPINGS:
    raise sources_lib.DatasetError(
        f"grouping must be one of {', '.join(GROUPINGS)}, got {grouping!r}")
  if grouping == "video":
    return {v.path: _VIDEO_GROUP_PREFIX + v.path for v in videos}
  missing = [v.path for v in videos if not v.subject]
  if missing:
    raise sources_lib.DatasetError(
        f"{len(missing)} of {len(videos)} videos have no subject (e.g. "
        f"{missing[0]}): cross-validation by subject needs the person filmed "
        "in every video, given in the manifest's 'subject' column. A model "
        "scores far higher on people it has seen in training, so folds over "
        "videos overstate how well it does on a new person; ask for them "
        "explicitly (--cross_validation_by_video) to get that optimistic "
        "number anyway")
  return {v.path: str(v.subject) for v in videos}


def _imbalance(eval_counts: np.ndarray, class_totals: np.ndarray) -> float:
  """Mean over classes of the spread across folds of the share held out.

  Args:
    eval_counts: [K folds, C classes] videos held out per fold and class.
    class_totals: [C] videos per class in the dataset (all > 0).
  """
  return float(np.mean(np.std(eval_counts / class_totals, axis=0)))


def assign_folds(videos: Sequence[Video],
                 num_folds: int,
                 grouping: str = "subject",
                 seed: int = 0) -> List[Fold]:
  """Splits videos into K folds grouped by subject, classes balanced.

  Deterministic for a seed: the seed only orders subjects that the greedy
  criterion does not tell apart.

  Args:
    videos: the videos (each with a path, label and subject).
    num_folds: K, in [2, number of subjects]; the number of subjects gives
      leave-one-subject-out.
    grouping: "subject", or "video" for optimistic folds over videos (see
      `video_groups`).
    seed: the random seed.

  Returns:
    K folds, fold k holding out the subjects assigned to it; together their
    eval sides partition the subjects and the videos.

  Raises:
    DatasetError: without subjects (see `video_groups`), with duplicate
      paths, or when K is out of range.
  """
  groups = video_groups(videos, grouping)
  if len(groups) != len(videos):
    raise sources_lib.DatasetError(
        "cross-validation: videos with the same path")
  paths_by_group: Dict[str, List[str]] = collections.defaultdict(list)
  for v in sorted(videos, key=lambda v: v.path):
    paths_by_group[groups[v.path]].append(v.path)
  names = sorted(paths_by_group)
  kind = "subjects" if grouping == "subject" else "videos"
  if not 2 <= num_folds <= len(names):
    raise sources_lib.DatasetError(
        f"cross-validation needs 2 to {len(names)} folds for {len(names)} "
        f"{kind} ({len(names)} is leave-one-out), got {num_folds}")

  classes = sorted({v.label for v in videos})
  label_of = {v.path: v.label for v in videos}
  histograms = {
      name: np.bincount([classes.index(label_of[p]) for p in paths],
                        minlength=len(classes))
      for name, paths in paths_by_group.items()}
  class_totals = np.sum(list(histograms.values()), axis=0)
  rng = np.random.default_rng(seed)
  shuffled = [names[i] for i in rng.permutation(len(names))]
  # Most concentrated first (a stable sort keeps the seeded order of ties).
  order = sorted(shuffled, key=lambda n: -np.std(histograms[n] /
                                                 histograms[n].sum()))

  eval_counts = np.zeros((num_folds, len(classes)), dtype=np.int64)
  members: List[List[str]] = [[] for _ in range(num_folds)]
  for name in order:
    best, best_imbalance = 0, np.inf
    for k in range(num_folds):
      eval_counts[k] += histograms[name]
      imbalance = _imbalance(eval_counts, class_totals)
      eval_counts[k] -= histograms[name]
      # Spreads within rounding error tie, and the fold with fewer videos
      # wins: an exact comparison would let one-ulp noise decide.
      if imbalance < best_imbalance - _TIE_TOLERANCE or (
          imbalance <= best_imbalance + _TIE_TOLERANCE and
          eval_counts[k].sum() < eval_counts[best].sum()):
        best, best_imbalance = k, min(imbalance, best_imbalance)
    eval_counts[best] += histograms[name]
    members[best].append(name)

  folds = []
  for k, held_out in enumerate(members):
    held_out = sorted(held_out)
    rest = sorted(set(names) - set(held_out))
    folds.append(Fold(
        index=k,
        eval_subjects=tuple(held_out),
        train_subjects=tuple(rest),
        eval_paths=tuple(sorted(p for n in held_out
                                for p in paths_by_group[n])),
        train_paths=tuple(sorted(p for n in rest for p in paths_by_group[n]))))
  return folds


def subset_subjects(fold: Fold, fraction: float, groups: Mapping[str, str],
                    seed: int = 0) -> Fold:
  """A fold trained on a fraction of its training subjects (learning curve).

  The subjects kept are the first of a seeded order of the fold's training
  subjects, so a smaller fraction keeps a subset of a larger one's and the
  curve's points differ only by the subjects added.

  Args:
    fold: the fold.
    fraction: in (0, 1]; the subjects kept are round(fraction * n), at
      least 1.
    groups: {path: subject} of the fold's videos (`video_groups`).
    seed: the random seed.

  Returns:
    The fold with fewer training subjects and videos; eval is unchanged.

  Raises:
    ValueError: if fraction is outside (0, 1].
  """
  if not 0 < fraction <= 1:
    raise ValueError(f"learning-curve fractions must be in (0, 1], got "
                     f"{fraction}")
  subjects = list(fold.train_subjects)
  rng = np.random.default_rng([seed, fold.index])
  ordered = [subjects[i] for i in rng.permutation(len(subjects))]
  kept = set(ordered[:max(1, round(fraction * len(subjects)))])
  return dataclasses.replace(
      fold, train_subjects=tuple(sorted(kept)),
      train_paths=tuple(p for p in fold.train_paths if groups[p] in kept))
