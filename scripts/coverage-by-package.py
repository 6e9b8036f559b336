"""make coverage: the combined data's statement coverage per package of shimctl, and in total."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import coverage


def main() -> int:
    cov = coverage.Coverage()
    cov.load()
    data = cov.get_data()
    root = Path.cwd() / "shimctl"
    statements: dict[str, int] = defaultdict(int)
    missing: dict[str, int] = defaultdict(int)
    for name in sorted(data.measured_files()):
        path = Path(name)
        if not path.is_relative_to(root) or path.name.endswith("_pb2.py"):
            continue
        parts = path.relative_to(root).parts
        package = "shimctl" + ("." + parts[0] if len(parts) > 1 else "")
        _, stmts, _, miss, _ = cov.analysis2(name)
        statements[package] += len(stmts)
        missing[package] += len(miss)
    if not statements:
        print("coverage: no data for shimctl", file=sys.stderr)
        return 1
    print(f"{'package':<20} {'statements':>10} {'missed':>7} {'cover':>6}")
    for package in sorted(statements):
        total, miss = statements[package], missing[package]
        print(f"{package:<20} {total:>10} {miss:>7} {100 * (total - miss) / total:>5.1f}%")
    total, miss = sum(statements.values()), sum(missing.values())
    print(f"{'total':<20} {total:>10} {miss:>7} {100 * (total - miss) / total:>5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
