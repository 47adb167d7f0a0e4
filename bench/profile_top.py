"""The top entries of a sampled profile in collapsed-stack form (`py-spy record --format raw`: one line
per distinct stack, frames joined by `;`, then the sample count).

    .venv/bin/python -m bench.profile_top FILE [--limit 20]

Two lists: `self`, where the samples were taken (the innermost frame), and `total`, every function on
the stack (each counted once per stack), as shares of all samples.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def _frames(line: str) -> tuple[list[str], int] | None:
    stack, _, count = line.rstrip().rpartition(" ")
    if not stack or not count.isdigit():
        return None
    return [frame.strip() for frame in stack.split(";") if frame.strip()], int(count)


def top_entries(text: str, *, limit: int = 20) -> dict[str, Any]:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in text.splitlines():
        parsed = _frames(line)
        if parsed is None or not parsed[0]:
            continue
        frames, count = parsed
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(n / max(samples, 1) * 100, 1)) for name, n in counter.most_common(limit)]

    return {"samples": samples, "self_pct": share(own), "total_pct": share(total)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_top", description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--limit", type=int, default=20)
    args = parser.parse_args(argv)
    top = top_entries(args.file.read_text(), limit=args.limit)
    print(f"{top['samples']} samples", file=sys.stdout)
    for title in ("self_pct", "total_pct"):
        print(f"\n{title}:")
        for name, pct in top[title]:
            print(f"  {pct:5.1f} %  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
