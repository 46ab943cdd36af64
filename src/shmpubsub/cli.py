"""The ``shmpubsub`` command (also ``python -m shmpubsub``)."""

from __future__ import annotations

import argparse
import logging
import sys


def _demo(args: argparse.Namespace) -> int:
    from . import demo

    return demo.run(count=args.count, interval=args.interval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shmpubsub", description="Publish/subscribe through shared memory.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the library does")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="run a publisher and two subscribers in separate processes")
    demo.add_argument("-n", "--count", type=int, default=10, help="messages to publish (default 10)")
    demo.add_argument("--interval", type=float, default=0.1, help="seconds between messages (default 0.1)")
    demo.set_defaults(run=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s"
    )
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
