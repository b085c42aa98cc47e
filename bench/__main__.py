"""`make bench`: runs every bench/bench_*.py module's main(), or the ones named on the command line.

`python -m bench bench_x --option ...`: one bench with its own options (after its name).

Benchmarks print figures and ratios against a baseline measured in the same run; they assert
nothing about time, so that a slow or busy machine never fails a build."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def main(argv=None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    if len(args) > 1 and args[1].startswith("-"):
        # Options belong to the one bench named before them; a bench's main takes its argv.
        print(f"=== {args[0]}", flush=True)
        importlib.import_module(f"bench.{args[0]}").main(args[1:])
        return 0
    names = args or sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    for name in names:
        print(f"=== {name}", flush=True)
        importlib.import_module(f"bench.{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main())
