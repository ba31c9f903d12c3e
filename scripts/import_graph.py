#!/usr/bin/env python3
"""Which package of ``seedvr_cli`` imports which: the arrows that docs/architecture.md draws.

Reads every module's imports (top-level and inside functions) with ``ast`` and prints one line
per arrow between packages, with the modules behind it. ``--check`` exits non-zero when an arrow
goes against the layering (e.g. ``pipeline`` or ``models`` importing ``run``, ``parallel``,
``media`` or ``cli``).

Usage: python scripts/import_graph.py [--check] [--modules]
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "seedvr_cli"

# Each package may import only the ones listed (top-level modules such as config or errors count
# as packages of their own). Anything else is an arrow the wrong way.
ALLOWED = {
    "models": set(),
    "pipeline": {"models", "errors"},
    "memory": {"models"},
    "weights": {"models", "errors"},
    "media": {"errors", "system", "arrays"},
    "parallel": {"errors", "system", "arrays", "pipeline"},
    "parity": {"models", "pipeline", "memory", "weights", "errors"},
    "config": {"errors", "media", "pipeline"},
    "run": {"config", "errors", "media", "parallel", "pipeline", "memory", "models", "weights"},
    "cli": {"config", "errors", "media", "parallel", "pipeline", "run", "weights", "presets", "system", "resources"},
}


def owner(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    name = module_name(path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
    return {m for m in found if m.startswith("seedvr_cli.")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail on arrows against the layering")
    parser.add_argument("--modules", action="store_true", help="list the modules behind each arrow")
    args = parser.parse_args()
    arrows: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        source = owner(module_name(path))
        for imported in imports_of(path):
            target = owner(imported)
            if target != source:
                arrows[source, target].add(f"{module_name(path)} -> {imported}")
    wrong = []
    for (source, target), pairs in sorted(arrows.items()):
        bad = source in ALLOWED and target not in ALLOWED[source]
        if bad:
            wrong.append((source, target))
        print(f"{source:>9} -> {target:<10}{'  AGAINST THE LAYERING' if bad else ''}")
        if args.modules or bad:
            for pair in sorted(pairs):
                print(f"{'':>14}{pair}")
    if args.check and wrong:
        print(f"{len(wrong)} arrow(s) against the layering", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
