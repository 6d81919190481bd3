"""The ``dataqueue`` command line.

Each subcommand lives in two functions: ``_add_<name>_command(subparsers)`` registers its
parser and stores its handler with ``set_defaults(handler=...)``; the handler takes the
parsed arguments and returns the exit status. :func:`main` only parses and dispatches.

Exit status: 0 on success, 1 when the command failed (database unreachable, migration
error), 2 for bad usage or missing configuration.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from importlib import metadata

from dataqueue.errors import ConfigurationError

PROGRAM = "dataqueue"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    ``--help`` returns 0; an unknown command or flag prints the usage to stderr and
    returns 2.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help, --version and usage errors
        return _exit_status(exc.code)
    handler: Handler = args.handler
    return handler(args)


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``dataqueue`` program with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Background jobs in the PostgreSQL (or Redis) you already run.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    _add_migrate_command(subparsers)
    return parser


def _add_migrate_command(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "migrate",
        help="create or upgrade the dataqueue tables",
        description=(
            "Create or upgrade the dataqueue tables with the bundled Alembic revisions. "
            "Existing tables (for example from the Node.js dataqueue) are kept and adopted. "
            "The version is recorded in dataqueue_alembic_version, never in alembic_version."
        ),
    )
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help=(
            "PostgreSQL URL (postgresql://user:password@host:port/dbname); default: "
            "$DATAQUEUE_DATABASE_URL, then $PG_DATAQUEUE_DATABASE"
        ),
    )
    parser.add_argument(
        "--schema",
        metavar="NAME",
        help="PostgreSQL schema for the tables and the version table (created if missing)",
    )
    parser.add_argument(
        "--sql",
        action="store_true",
        help="print the SQL to stdout instead of running it (no database needed)",
    )
    parser.add_argument(
        "--revision",
        metavar="REV",
        default="head",
        help="revision to upgrade to (default: head)",
    )
    parser.set_defaults(handler=_run_migrate)


def _run_migrate(args: argparse.Namespace) -> int:
    from dataqueue.migrate import database_url_from_env, upgrade

    url: str | None = args.database_url or database_url_from_env()
    if url is None and not args.sql:
        print(
            f"{PROGRAM} migrate: no database URL; pass --database-url URL or set "
            "DATAQUEUE_DATABASE_URL (or PG_DATAQUEUE_DATABASE)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    _log_progress_to_stderr()
    try:
        upgrade(url, schema=args.schema, revision=args.revision, sql=args.sql)
    except ConfigurationError as exc:
        print(f"{PROGRAM} migrate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # report any failure as one line, without a traceback
        logging.getLogger("dataqueue.cli").debug("migrate failed", exc_info=True)
        print(f"{PROGRAM} migrate: failed: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _log_progress_to_stderr() -> None:
    """Show Alembic's "Running upgrade ..." lines; stdout stays clean for ``--sql``."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    logging.getLogger("alembic").setLevel(logging.INFO)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _exit_status(code: object) -> int:
    if code is None:
        return EXIT_OK
    if isinstance(code, int):
        return code
    return EXIT_FAILURE


def _version() -> str:
    try:
        return metadata.version("dataqueue")
    except metadata.PackageNotFoundError:
        return "unknown"
