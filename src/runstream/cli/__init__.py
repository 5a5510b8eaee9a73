"""The `runstream` command: one subcommand per module in this package.

Each module defines `register(subparsers)`, which adds its parser and sets `run`, a
function taking the parsed arguments and returning the exit code. Heavy imports
(FastAPI, LangGraph) happen inside `run`, so `runstream --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from runstream import __version__
from runstream.core.errors import RunstreamError

COMMANDS = ("api", "worker", "demo", "bench", "migrate")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

logger = logging.getLogger("runstream")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runstream",
        description="Stream LangGraph job output through Redis to Server-Sent Events clients.",
    )
    parser.add_argument("--version", action="version", version=f"runstream {__version__}")
    parser.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=LOG_LEVELS,
        help="DEBUG, INFO, WARNING, ERROR or CRITICAL (default INFO)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"runstream.cli.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"runstream.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.run(args)
    except RunstreamError as err:
        print(f"runstream {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
