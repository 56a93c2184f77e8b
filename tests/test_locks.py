"""Workdir and dataset-build locks: a second holder fails at once (or waits) naming the holder's
pid and host; a holder killed with SIGKILL never blocks the next run."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from rlthink import locks

HOLD = textwrap.dedent("""
    import sys, time
    from rlthink import locks
    with locks.workdir_lock(sys.argv[1]):
      print("held", flush=True)
      time.sleep(120)
""")


def hold_in_subprocess(workdir):
  proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], stdout=subprocess.PIPE,
                          text=True)
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_second_holder_fails_naming_pid_and_host_and_a_killed_holder_is_taken_over(tmp_path,
                                                                                  caplog):
  proc = hold_in_subprocess(tmp_path)
  try:
    start = time.monotonic()
    with pytest.raises(locks.LockHeldError) as e:
      with locks.workdir_lock(tmp_path):
        pass
    assert time.monotonic() - start < 5  # at once, not after a wait
    message = str(e.value)
    assert f"process {proc.pid} on host {socket.gethostname()}" in message
    assert f"workdir {tmp_path}" in message and "another --workdir" in message
  finally:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
  with locks.workdir_lock(tmp_path) as record:  # the dead holder's lock is taken over
    assert record["pid"] == os.getpid()
  assert f"taking over the lock of process {proc.pid}" in caplog.text
  with locks.workdir_lock(tmp_path):  # released cleanly: taken again without a warning
    with locks.workdir_lock(tmp_path):  # nested in the same thread
      pass
  assert caplog.text.count("taking over") == 1


def test_a_waiting_lock_gets_the_lock_when_the_holder_releases_it(tmp_path):
  path, order = tmp_path / "x.lock", []
  held = threading.Event()

  def first():
    with locks.exclusive_lock(path, "x"):
      held.set()
      time.sleep(0.5)
      order.append("first done")

  thread = threading.Thread(target=first)
  thread.start()
  held.wait()
  with pytest.raises(locks.LockHeldError, match="x is in use by process"):
    with locks.exclusive_lock(path, "x", wait=0.1):
      pass
  with locks.exclusive_lock(path, "x", wait=None):
    order.append("second")
  thread.join()
  assert order == ["first done", "second"]
