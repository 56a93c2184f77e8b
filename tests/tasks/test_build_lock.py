"""Concurrent builds of one dataset (two runs sharing a data_dir) take turns: the second waits for
the first and reuses its files instead of crashing on the directory the first one renamed."""

import threading
import time

import rlthink.tasks
from rlthink.tasks import builder


def test_two_concurrent_builds_of_one_dataset_take_turns(tmp_path, monkeypatch):
  task = rlthink.tasks.get("arithmetic", size="tiny", num_train=20, num_test=5,
                           data_dir=str(tmp_path))
  cls = builder.builder_class(type(task))
  original, active, peak, calls = cls.download_and_prepare, [0], [0], []

  def slow_prepare(self, *args, **kwargs):
    active[0] += 1
    peak[0] = max(peak[0], active[0])
    calls.append(threading.get_ident())
    time.sleep(0.5)  # both threads are inside at once unless the lock serializes them
    try:
      return original(self, *args, **kwargs)
    finally:
      active[0] -= 1

  monkeypatch.setattr(cls, "download_and_prepare", slow_prepare)
  results, errors = [], []

  def build():
    try:
      results.append(builder.build(task))
    except Exception as e:  # noqa: BLE001  (reported below)
      errors.append(e)

  threads = [threading.Thread(target=build) for _ in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors, errors
  assert peak[0] == 1 and len(calls) == 1  # one build; the other reused its files
  assert all(b.is_prepared() for b in results) and len(results) == 2
  assert len(builder.data_source(task, "test")) == 5
