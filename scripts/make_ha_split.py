"""Write the committed evaluation split of the Home Assistant intent sentences.

Deduplicates identical sentences (dropping those with conflicting labels), then splits each
intent ~80/20 train/test and carves ~10 % of train into validation, with a fixed seed. The
files hold one row id per line, sorted; re-running reproduces them byte for byte.

    .venv/bin/python scripts/make_ha_split.py            # rewrite edge_agent/data/ha_split/
    .venv/bin/python scripts/make_ha_split.py --check    # exit 1 if the committed files differ
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_agent.skills.home.dataset import SPLIT_SEED, SPLITS, Split, load_rows, make_split

OUT = Path(__file__).resolve().parents[1] / "edge_agent" / "data" / "ha_split"


def render(split: Split) -> dict[str, str]:
    return {f"{name}.txt": "".join(f"{i}\n" for i in split.part(name)) for name in SPLITS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the split files")
    parser.add_argument("--seed", type=int, default=SPLIT_SEED)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    rows = load_rows()
    split = make_split(rows, seed=args.seed)
    files = render(split)
    if args.check:
        stale = [n for n, text in files.items() if _read(args.out / n) != text]
        print(f"stale: {', '.join(stale)}" if stale else "split files are up to date")
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text, encoding="utf-8")
    sizes = ", ".join(f"{n} {len(split.part(n))}" for n in SPLITS)
    print(f"{len(rows)} rows: {sizes}; {len(split.duplicates)} duplicates and")
    print(f"{len(split.conflicting)} conflicting rows dropped -> {args.out}")
    return 0


def _read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.exists() else None


if __name__ == "__main__":
    sys.exit(main())
