"""Class lists: the exercise-form classes and the Kinetics label maps."""

import os
from typing import List, Sequence

from i3d import fileio

EXERCISE_CLASSES: tuple[str, ...] = (
    "squat_correct",
    "squat_not-low",
    "pull-up_correct",
    "push-up_not-low",
    "push-up_butt-up",
    "push-up_not-straight",
    "crunch_correct",
    "crunch_heels-up",
    "crunch_not-enough",
    "crunch_bad-hands",
)

_LABEL_MAPS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                               "label_maps")
_BUILTIN_LABEL_FILES = {
    "kinetics400": os.path.join(_LABEL_MAPS_DIR, "kinetics400_labels.txt"),
    "kinetics600": os.path.join(_LABEL_MAPS_DIR, "kinetics600_labels.txt"),
}
_BUILTIN_CLASS_LISTS = {"exercise": EXERCISE_CLASSES}


def read_class_file(path: str) -> List[str]:
  """Reads a class list: one name per line, blank lines and `#` comments ignored.

  Args:
    path: a text file.

  Returns:
    The class names in logit order.

  Raises:
    ValueError: if the file is missing, not text, empty or names a class
      twice.
  """
  if not os.path.isfile(path):
    raise ValueError(f"{path}: class list file not found")
  names = [line.strip() for line in fileio.read_user_text(path).splitlines()]
  names = [n for n in names if n and not n.startswith("#")]
  return validate_classes(names, source=path)


def validate_classes(names: Sequence[str], source: str = "class list") -> List[str]:
  """Checks that a class list is non-empty and has no duplicates.

  Args:
    names: class names.
    source: where the names came from, for error messages.

  Returns:
    The names as a list.

  Raises:
    ValueError: if the list is empty or has duplicates.
  """
  names = [str(n) for n in names]
  if not names:
    raise ValueError(f"{source}: the class list is empty")
  seen = set()
  duplicates = sorted({n for n in names if n in seen or seen.add(n)})
  if duplicates:
    raise ValueError(f"{source}: duplicate class names {duplicates}")
  return names


def resolve_classes(spec: str | Sequence[str] | None) -> List[str]:
  """Turns a class specification into a class list.

  Args:
    spec: None or "exercise" for the 10 exercise classes; "kinetics400" or
      "kinetics600" for the built-in Kinetics label maps; a path to a class
      file; a comma-separated string of names; or a sequence of names.

  Returns:
    The class names in logit order.

  Raises:
    ValueError: if the specification names no valid class list.
  """
  if spec is None:
    return list(EXERCISE_CLASSES)
  if not isinstance(spec, str):
    return validate_classes(spec)
  if spec in _BUILTIN_CLASS_LISTS:
    return list(_BUILTIN_CLASS_LISTS[spec])
  if spec in _BUILTIN_LABEL_FILES:
    return read_class_file(_BUILTIN_LABEL_FILES[spec])
  if os.path.isfile(spec):
    return read_class_file(spec)
  if "," in spec:
    return validate_classes([n.strip() for n in spec.split(",") if n.strip()])
  raise ValueError(
      f"{spec!r} is not a built-in class list "
      f"({', '.join(sorted([*_BUILTIN_CLASS_LISTS, *_BUILTIN_LABEL_FILES]))}), "
      "an existing class file, or a comma-separated list of names")
