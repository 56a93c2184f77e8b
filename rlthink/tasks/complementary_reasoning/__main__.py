"""Times the build of the complementary_reasoning dataset (default size unless told otherwise).

    taskset -c 0 python -m rlthink.tasks.complementary_reasoning [--size default] [--data_dir DIR]

Prints the seconds spent generating and writing (TFDS array_record), and the examples per split.
Without --data_dir it builds into a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

from rlthink.tasks import builder
from rlthink.tasks.complementary_reasoning import make_task


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="default")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--data_dir", default=None)
  args = parser.parse_args(argv)
  with tempfile.TemporaryDirectory() as tmp:
    task = make_task(size=args.size, seed=args.seed, data_dir=args.data_dir or tmp)
    start = time.perf_counter()
    counts = {split: len(rows) for split, rows in task._data.items()}  # generation alone
    generated = time.perf_counter()
    builder.build(task)
    built = time.perf_counter()
    report = {"size": args.size, "generate_s": round(generated - start, 2),
              "write_s": round(built - generated, 2), "total_s": round(built - start, 2),
              "examples": counts}
  print(json.dumps(report, indent=1))
  return report


if __name__ == "__main__":
  main()
