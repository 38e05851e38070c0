"""Run the benchmarks one after another; each writes its JSON result to bench/results/.

    python bench/run.py            # every benchmark, with its default sizes
    python bench/run.py sync fanout   # only these (names as in NAME_bench.py)

They are run by hand, on a quiet machine: their figures are noisy on a busy one, which is
why none of them is part of the test suite. Each one's docstring says what it measures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    known = sorted(p.name.removesuffix("_bench.py") for p in HERE.glob("*_bench.py"))
    wanted = sys.argv[1:] or known
    unknown = [name for name in wanted if name not in known]
    if unknown:
        print(f"No such benchmark: {', '.join(unknown)} (there are: {', '.join(known)})")
        return 2
    failed = []
    for name in wanted:
        print(f"== {name}", flush=True)
        if subprocess.run([sys.executable, str(HERE / f"{name}_bench.py")]).returncode != 0:
            failed.append(name)
    if failed:
        print(f"Failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
