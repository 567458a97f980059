"""Command line: regenerate (or --check) broker/protocol/messages from the Kafka specs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from broker.protocol.codegen.generate import generate

REPO = Path(__file__).resolve().parents[3]
DEFAULT_SPECS = REPO.parent / "shared" / "kafka-message-specs"
DEFAULT_OUT = REPO / "broker" / "protocol" / "messages"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m broker.protocol.codegen")
    p.add_argument("specs", nargs="?", type=Path, default=DEFAULT_SPECS,
                   help="folder of Kafka JSON message specs")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--check", action="store_true",
                   help="exit 1 if the committed files differ from a fresh generation")
    args = p.parse_args(argv)
    files = generate(args.specs)
    stale = []
    for name, text in files.items():
        path = args.out / name
        old = path.read_text(encoding="utf-8") if path.exists() else None
        if old != text:
            stale.append(name)
            if not args.check:
                path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print("stale generated files:", ", ".join(stale), file=sys.stderr)
        return 1
    print(f"{len(files)} files, {len(stale)} {'stale' if args.check else 'written'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
