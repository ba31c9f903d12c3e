#!/usr/bin/env python3
"""Compare our implementation with a reference fixture directory.

Usage: python scripts/parity.py FIXTURE_DIR [FIXTURE_DIR ...]

Accepts any directory in the format of ``shared/fixtures/{dit,vae,pipeline,flashvsr}`` (other seeds and
shapes included) and prints, per case and output, the max absolute and relative error against the
reference. Exits 1 when any output is over its fixture's tolerance.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seedvr_cli.parity import detect_kind, kind_module  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("fixture_dirs", nargs="+", type=Path, help="fixture directories to check")
    args = parser.parse_args(argv)

    failed = 0
    for fixture_dir in args.fixture_dirs:
        if not fixture_dir.is_dir():
            print(f"error: {fixture_dir} is not a directory", file=sys.stderr)
            return 2
        try:
            kind = detect_kind(fixture_dir)
            print(f"== {fixture_dir} ({kind})")
            results = kind_module(kind).run(fixture_dir)
        except (ValueError, KeyError, OSError) as err:
            # A fixture directory we cannot read is a failed check, reported in one line.
            print(f"error: {fixture_dir}: {type(err).__name__}: {err}", file=sys.stderr)
            failed += 1
            continue
        for result in results:
            status = "ok  " if result.passed else "FAIL"
            note = f"  {result.note}" if result.note else ""
            print(
                f"{status} {result.case:<32} {result.output:<28} max_abs {result.max_abs:.3e}  "
                f"max_rel {result.max_rel:.3e}  tol {result.tolerance:.1e}{note}"
            )
            failed += not result.passed
    print(f"{failed} output(s) over tolerance or unreadable" if failed else "all outputs within tolerance")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
