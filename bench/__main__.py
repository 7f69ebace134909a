"""Run every ``bench/bench_*.py`` (or the ones named) and print their reports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(names: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if names:
        scripts = [s for s in scripts if any(n in s.stem for n in names)]
    failed = 0
    for script in scripts:
        print(f"\n=== {script.stem} ===", flush=True)
        result = subprocess.run([sys.executable, "-m", f"bench.{script.stem}"],
                                cwd=HERE.parent, check=False)
        failed += result.returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
