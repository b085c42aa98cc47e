"""`make bench`: runs every bench/bench_*.py module's main(), or the ones named on the command line.

Benchmarks print figures and ratios against a baseline measured in the same run; they assert
nothing about time, so that a slow or busy machine never fails a build."""
from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def main(argv=None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or sorted(
        m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_")
    )
    for name in names:
        print(f"=== {name}", flush=True)
        importlib.import_module(f"bench.{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
