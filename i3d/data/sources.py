"""The videos of a dataset: a folder with one sub-folder per class, or a manifest.

`discover_videos` lists them with their labels (and subjects and fixed splits,
when a manifest gives them), before anything is decoded.
"""

import csv
import dataclasses
import io
import os
import unicodedata
from typing import Sequence

from absl import logging

from i3d import fileio
from i3d import labels

VIDEO_EXTENSIONS: tuple[str, ...] = (
    ".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".3gp",
    ".wmv", ".flv")
SPLITS: tuple[str, ...] = ("train", "eval")
# Column separators a manifest may use; the header's most frequent one is.
_MANIFEST_DELIMITERS = (",", ";", "\t")


class DatasetError(ValueError):
  """A dataset that cannot be prepared or read as given (not a single video)."""


@dataclasses.dataclass(frozen=True)
class VideoSource:
  """A video to prepare.

  Attributes:
    path: absolute path of the file.
    relpath: path relative to the data root (data_dir or the manifest's
      folder), or the absolute path of a listed video outside it; identifies
      the video in the cache metadata and the splits.
    label: class name.
    subject: the person filmed, when the manifest says; None otherwise.
    split: "train" or "eval" when the manifest fixes it; None otherwise.
  """
  path: str
  relpath: str
  label: str
  subject: str | None = None
  split: str | None = None


@dataclasses.dataclass(frozen=True)
class Failure:
  """A video that could not be prepared: the file and the reason."""
  path: str
  reason: str

  def __str__(self) -> str:
    return f"{self.path}: {self.reason}"


@dataclasses.dataclass(frozen=True)
class Discovery:
  """The videos of a dataset.

  Attributes:
    root: the folder relative paths are relative to.
    classes: class names in logit order.
    sources: the videos found, sorted by relative path.
    failures: listed videos that cannot be used (missing).
  """
  root: str
  classes: tuple[str, ...]
  sources: tuple[VideoSource, ...]
  failures: tuple[Failure, ...]


def _scan_data_dir(data_dir: str, classes: Sequence[str]) -> list[VideoSource]:
  """Lists the videos of a folder with one sub-folder per class."""
  if not os.path.isdir(data_dir):
    raise DatasetError(f"{data_dir}: data_dir is not a directory")
  root = os.path.abspath(data_dir)
  sources = []
  ignored = []
  for name in sorted(os.listdir(root)):
    class_dir = os.path.join(root, name)
    if name.startswith(".") or not os.path.isdir(class_dir):
      continue
    if name not in classes:
      raise DatasetError(
          f"{class_dir}: folder name {name!r} is not a class (classes: "
          f"{', '.join(classes)}); pass --classes or move the folder")
    for directory, subdirs, filenames in os.walk(class_dir):
      subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
      for filename in sorted(filenames):
        path = os.path.join(directory, filename)
        if filename.startswith("."):
          continue
        if not filename.lower().endswith(VIDEO_EXTENSIONS):
          ignored.append(path)
          continue
        sources.append(
            VideoSource(path=path, relpath=os.path.relpath(path, root),
                        label=name))
  if ignored:
    logging.warning("Ignored %d file(s) without a video extension, e.g. %s",
                    len(ignored), ignored[0])
  return sources


def _manifest_rows(manifest: str) -> list[dict[str, str]]:
  """The rows of a manifest as {column: value}, as spreadsheets save them.

  Accepts a byte-order mark, CRLF line ends, a header in any case with spaces
  around names, and `;` or tab instead of `,` (Excel in locales whose decimal
  mark is a comma). Rows with every cell empty (left by spreadsheets at the
  end) are dropped; the others keep their line numbers in "_line".
  """
  try:
    text = fileio.read_user_text(manifest)
  except (OSError, ValueError) as e:
    raise DatasetError(str(e)) from e
  header = text.splitlines()[0] if text.strip() else ""
  delimiter = max(_MANIFEST_DELIMITERS, key=header.count)
  reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter,
                      skipinitialspace=True)
  columns = [name.strip().lower() for name in next(reader, [])]
  rows = []
  for cells in reader:
    if any(cell.strip() for cell in cells):
      # The line a row ends on (a quoted cell may span lines).
      rows.append({**dict(zip(columns, cells)), "_line": str(reader.line_num)})
  if not rows or {"path", "label"} - set(columns):
    raise DatasetError(
        f"{manifest}: expected a header line with columns path,label"
        f"[,subject][,split] and at least one row (found columns "
        f"{','.join(columns) or 'none'})")
  return rows


def _existing_path(path: str) -> str:
  """`path`, or the spelling of it that exists when it was written elsewhere.

  Manifests written on Windows separate folders with backslashes, and macOS
  stores accented names decomposed (NFD) where editors write them composed
  (NFC): both name a file that exists under another spelling.
  """
  candidates = [path]
  if os.sep == "/" and "\\" in path:
    candidates.append(path.replace("\\", "/"))
  candidates += [unicodedata.normalize(form, c) for c in list(candidates)
                 for form in ("NFC", "NFD")]
  return next((c for c in candidates if os.path.isfile(c)), path)


def _read_manifest(
    manifest: str,
    classes: Sequence[str]) -> tuple[list[VideoSource], list[Failure]]:
  """Reads a manifest CSV with columns path,label[,subject][,split]."""
  if not os.path.isfile(manifest):
    raise DatasetError(f"{manifest}: manifest not found")
  root = os.path.dirname(os.path.abspath(manifest))
  rows = _manifest_rows(manifest)
  has_split = "split" in rows[0]
  sources, failures = [], []
  first_line_of = {}
  for row in rows:
    line = row["_line"]
    where = f"{manifest}:{line}"
    value = {k: (row.get(k) or "").strip()
             for k in ("path", "label", "subject", "split")}
    if not value["path"] or not value["label"]:
      raise DatasetError(f"{where}: empty path or label")
    if value["label"] not in classes:
      raise DatasetError(
          f"{where}: unknown label {value['label']!r} for {value['path']} "
          f"(classes: {', '.join(classes)})")
    if has_split and value["split"] not in SPLITS:
      raise DatasetError(
          f"{where}: split must be one of {', '.join(SPLITS)} when the split "
          f"column is present, got {value['split']!r}")
    # A manifest is the user's own file: absolute paths and paths through
    # `..` (videos on another disk) are theirs to write.
    path = _existing_path(os.path.normpath(os.path.join(
        root, os.path.expanduser(value["path"]))))
    if path in first_line_of:
      raise DatasetError(
          f"{where}: {value['path']} is listed twice (also on line "
          f"{first_line_of[path]})")
    first_line_of[path] = line
    if not os.path.isfile(path):
      failures.append(Failure(path, f"listed on {where} but not found"))
      continue
    # Inside the manifest's folder a video is known by its relative path,
    # which survives moving the folder; outside it, by its absolute path.
    inside = os.path.commonpath([root, path]) == root
    sources.append(VideoSource(
        path=path, relpath=os.path.relpath(path, root) if inside else path,
        label=value["label"], subject=value["subject"] or None,
        split=value["split"] or None))
  return sources, failures


def discover_videos(data_dir: str | None = None,
                    manifest: str | None = None,
                    classes: str | Sequence[str] | None = None) -> Discovery:
  """Finds the videos of a dataset and checks their labels.

  Args:
    data_dir: a folder with one sub-folder per class (searched recursively for
      files with a video extension; hidden files are skipped).
    manifest: a CSV file with a header and columns `path,label` and optionally
      `subject` and `split` ("train" or "eval", then on every row), as a
      spreadsheet saves it (see `_manifest_rows`). Paths may be absolute or
      relative to the manifest's folder (`..` included); listed files that do
      not exist are reported as failures.
    classes: the class list (see `labels.resolve_classes`); None for the
      exercise classes.

  Returns:
    The videos found, sorted by relative path, and the listed videos that
    cannot be used.

  Raises:
    DatasetError: if not exactly one of data_dir and manifest is given, for an
      unknown label or class folder, a malformed manifest, a video listed
      twice, or when no video is found.
  """
  if (data_dir is None) == (manifest is None):
    raise DatasetError("give exactly one of data_dir and manifest")
  try:
    class_names = tuple(labels.resolve_classes(classes))
  except ValueError as e:
    raise DatasetError(str(e)) from e
  if data_dir is not None:
    root = os.path.abspath(data_dir)
    sources, failures = _scan_data_dir(data_dir, class_names), []
  else:
    root = os.path.dirname(os.path.abspath(manifest))
    sources, failures = _read_manifest(manifest, class_names)
  if not sources and not failures:
    raise DatasetError(f"{data_dir or manifest}: no videos found")
  missing = sorted(set(class_names) - {s.label for s in sources})
  if missing:
    logging.warning("No videos for class(es): %s", ", ".join(missing))
  return Discovery(root=root, classes=class_names,
                   sources=tuple(sorted(sources, key=lambda s: s.relpath)),
                   failures=tuple(failures))
