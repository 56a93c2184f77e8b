"""Exclusive locks: one run per workdir, one builder per dataset.

A lock is `fcntl.flock` on a lock file plus a record in it of who holds it (pid, host, command,
since when). The kernel drops a flock when its holder dies, even by SIGKILL, so a stale lock never
blocks: the next run takes it over and says so. The record is only for the messages: a second
holder fails at once (a workdir) or waits (a dataset build) naming the holder's pid and host.

    with locks.workdir_lock(workdir):
      ...  # train; a second `rlthink train` on the same workdir stops with LockHeldError
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from typing import Iterator

_log = logging.getLogger(__name__)

WORKDIR_LOCK = ".rlthink.lock"
# Locks held here ((real path, thread) -> depth): the same thread taking one again nests; another
# thread contends through flock like another process.
_held: dict[tuple[str, int], int] = {}


class LockHeldError(RuntimeError):
  """Another live process holds the lock; `holder` is its record (pid, host, command, since)."""

  def __init__(self, message: str, holder: dict):
    super().__init__(message)
    self.holder = holder


def workdir_lock(workdir: str | os.PathLike):
  """Holds `<workdir>/.rlthink.lock` for the duration of a `with` block.

  Raises LockHeldError at once when another process holds it. In a multi-host run, take it on
  process 0 only (every process shares the workdir).
  """
  workdir = os.path.abspath(os.fspath(workdir))
  return exclusive_lock(os.path.join(workdir, WORKDIR_LOCK), f"workdir {workdir}",
                        hint="wait for it to finish or stop it, or use another --workdir")


def dataset_build_lock(path: str | os.PathLike, name: str, wait: float | None = None):
  """Holds the lock file `path` while dataset `name` is built. A second builder waits (up to
  `wait` seconds; None: as long as it takes) and then finds the dataset ready."""
  return exclusive_lock(path, f"dataset {name}", wait=wait,
                        hint="wait for that build to finish or stop it")


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str, *, wait: float | None = 0.0,
                   hint: str = "", poll_seconds: float = 0.2) -> Iterator[dict]:
  """Holds the lock file `path` (created if needed) for a `with` block; yields its record.

  wait: 0 fails at once with LockHeldError naming the holder; a number of seconds waits that
  long first; None waits without a limit (logging the holder once).
  """
  path = os.path.abspath(os.fspath(path))
  key = (os.path.realpath(path), threading.get_ident())
  if key in _held:  # nested in this thread: the outer `with` holds it
    _held[key] += 1
    try:
      yield _read_record_path(path)
    finally:
      _held[key] -= 1
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
  try:
    _acquire(fd, path, what, wait, hint, poll_seconds)
    stale = _read_record(fd)
    if stale and not _is_self(stale):
      _log.warning("%s: taking over the lock of process %s on host %s, which no longer holds it "
                   "(it stopped without releasing %s)", what, stale.get("pid"), stale.get("host"),
                   path)
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": " ".join(sys.argv)[:500]}
    _write_record(fd, record)
    _held[key] = 1
    try:
      yield record
    finally:
      del _held[key]
      _write_record(fd, None)  # an empty record: released cleanly
      fcntl.flock(fd, fcntl.LOCK_UN)
  finally:
    os.close(fd)


def _acquire(fd: int, path: str, what: str, wait: float | None, hint: str,
             poll_seconds: float) -> None:
  deadline = None if wait is None else time.monotonic() + wait
  announced = False
  while True:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      return
    except OSError as e:
      if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise OSError(e.errno, f"cannot lock {path} for {what} ({e.strerror}); the filesystem "
                      "must support flock") from None
    holder = _read_record(fd) or {}
    if deadline is not None and time.monotonic() >= deadline:
      raise LockHeldError(f"{what} is in use by {_describe(holder)} (lock file {path}); {hint}",
                          holder)
    if not announced:
      _log.warning("%s is in use by %s; waiting for it (lock file %s)", what, _describe(holder),
                   path)
      announced = True
    time.sleep(poll_seconds)


def _describe(holder: dict) -> str:
  if not holder:
    return "another process (its record is not written yet)"
  text = f"process {holder.get('pid')} on host {holder.get('host')}"
  if holder.get("since"):
    text += f" since {holder['since']}"
  if holder.get("command"):
    text += f" ({holder['command'][:120]})"
  return text


def _is_self(record: dict) -> bool:
  return record.get("pid") == os.getpid() and record.get("host") == socket.gethostname()


def _read_record(fd: int) -> dict | None:
  try:
    data = os.pread(fd, 65536, 0)
    record = json.loads(data.decode("utf-8")) if data.strip() else None
  except (OSError, ValueError):  # a record cut by a kill while it was written
    return None
  return record if isinstance(record, dict) else None


def _read_record_path(path: str) -> dict | None:
  fd = os.open(path, os.O_RDONLY)
  try:
    return _read_record(fd)
  finally:
    os.close(fd)


def _write_record(fd: int, record: dict | None) -> None:
  os.ftruncate(fd, 0)
  if record is not None:
    os.pwrite(fd, (json.dumps(record) + "\n").encode("utf-8"), 0)
  os.fsync(fd)
