"""`s2kafka` command line."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from s2core.config import ConfigError, load_config


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="s2kafka", description="Kafka-compatible broker on an "
                                "S2-style stream store")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the server (embedded default: no external service)")
    s.add_argument("--config", help="TOML config file (default: the built-in embedded config)")
    s.add_argument("--data-dir", help="directory for local state [S2KAFKA_DATA_DIR]")
    s.add_argument("--kafka-listen", help="Kafka listener HOST:PORT [S2KAFKA_KAFKA_LISTEN]")
    s.add_argument("--http-listen", help="S2 HTTP API listener HOST:PORT "
                   "[S2KAFKA_HTTP_LISTEN]")
    s.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any config key")
    s.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {"server.data_dir": args.data_dir, "server.kafka_listen": args.kafka_listen,
                 "server.http_listen": args.http_listen}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"s2kafka: --set needs SECTION.KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        overrides[key] = value
    try:
        cfg = load_config(args.config, overrides=overrides)
    except (ConfigError, OSError) as e:
        print(f"s2kafka: configuration error: {e}", file=sys.stderr)
        return 2
    from broker.main import serve
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(cfg))
    else:
        uvloop.run(serve(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main())
