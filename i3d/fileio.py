"""Atomic file writes (a reader never sees a half-written file), and reading
the text files users write with other tools (manifests, class lists)."""

import codecs
import contextlib
import json
import os
import tempfile
from typing import Any, Iterator

from absl import logging

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path beside `path`, renamed onto `path` on success.

  The temporary file lives in the same directory, so the final `os.replace` is
  atomic on POSIX file systems. On an exception the temporary file is removed
  and `path` keeps its previous content.

  Args:
    path: the final destination.

  Yields:
    A path to write to.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(
      dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  os.close(fd)
  os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files private; keep umask's.
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically."""
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())


def write_text(path: str, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically."""
  write_bytes(path, text.encode("utf-8"))


def write_json(path: str, value: Any) -> None:
  """Writes `value` as indented JSON to `path` atomically."""
  write_text(path, json.dumps(value, indent=2, sort_keys=False) + "\n")


# Byte-order marks that spreadsheets and Windows editors put before text:
# Excel's "CSV UTF-8" and Notepad write UTF-8 with a BOM, "Unicode text"
# writes UTF-16. Longest first: the UTF-32 LE mark starts with UTF-16 LE's.
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"))
# What Excel's plain "CSV (Comma delimited)" writes on Western Windows.
_LEGACY_ENCODING = "cp1252"


def read_user_text(path: str) -> str:
  """Reads a text file a person wrote, whatever tool saved it.

  The encoding follows the byte-order mark (UTF-8, UTF-16 or UTF-32, mark
  removed); without one the text is UTF-8, or, if it is not valid UTF-8,
  Windows-1252 (Excel's plain CSV on Western Windows), with a warning. Line
  ends (LF, CRLF or CR) are kept as they are; `str.splitlines` and `csv`
  take them all.

  Args:
    path: the file.

  Returns:
    The text.

  Raises:
    OSError: if the file cannot be read.
    ValueError: if it is neither UTF-8 nor Windows-1252 text.
  """
  with open(path, "rb") as f:
    data = f.read()
  for mark, encoding in _BYTE_ORDER_MARKS:
    if data.startswith(mark):
      try:
        return data.decode(encoding)
      except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid {encoding} text after its "
                         f"byte-order mark ({e.reason} at byte {e.start})"
                         ) from e
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    utf8_error = e
  try:
    text = data.decode(_LEGACY_ENCODING)
  except UnicodeDecodeError:
    raise ValueError(
        f"{path}: not UTF-8 text ({utf8_error.reason} at byte "
        f"{utf8_error.start}); save it as UTF-8 (e.g. \"CSV UTF-8\")"
    ) from utf8_error
  logging.warning("%s is not UTF-8; read it as Windows-1252 (save it as UTF-8 "
                  "to be sure of accented names)", path)
  return text
