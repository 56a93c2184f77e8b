"""Files a killed run can never leave half-written: write a temporary file, fsync, rename.

A reader (or a resumed run) sees either the old file or the new one, never a prefix of the new
one, whatever moment the writer was killed at.
"""

from __future__ import annotations

import json
import os
import tempfile


def atomic_write_bytes(path: str | os.PathLike, data: bytes, mode: int | None = None) -> None:
  """Replaces `path` with `data` atomically (temp file in the same directory, fsync, rename).

  mode: the file's permission bits; default: what a plain `open(path, "w")` would give (0o666
  less the umask), not tempfile's 0o600.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.tmp-", dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, _default_mode() if mode is None else mode)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  _fsync_directory(directory)  # the rename itself survives a power cut


def atomic_write_text(path: str | os.PathLike, text: str, mode: int | None = None) -> None:
  """`atomic_write_bytes` of `text` encoded as UTF-8."""
  atomic_write_bytes(path, text.encode("utf-8"), mode)


def atomic_write_json(path: str | os.PathLike, obj, **dump_options) -> None:
  """`obj` as JSON (indent 2 unless given), newline-terminated, written atomically."""
  dump_options.setdefault("indent", 2)
  atomic_write_text(path, json.dumps(obj, **dump_options) + "\n")


def default_mode(directory: bool = False) -> int:
  """The permissions a new file (0o666) or directory (0o777) gets under the current umask."""
  return (0o777 if directory else 0o666) & ~_umask()


def _default_mode() -> int:
  return default_mode(directory=False)


def _umask() -> int:
  # Linux reports the umask without changing it; elsewhere set-and-restore (not thread-safe, but
  # only between these two calls).
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except (OSError, ValueError, IndexError):
    pass
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def _fsync_directory(directory: str) -> None:
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:  # some filesystems (e.g. network mounts) do not fsync directories
    pass
  finally:
    os.close(fd)
