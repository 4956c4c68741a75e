"""``python -m connector``: run the live feed, show status, backfill a past range, unlock, purge dead letters.

``run`` is the exact code path of the timer function. Settings come from the
environment (see README). The exit code is the kind of the error a run stopped with
(:class:`connector.errors.ErrorKind`): 0 done (also throttled, budget used up or
deferred: the next run continues), 1 unexpected, 2 bad setting or argument,
3 authentication or permission, 4 checkpoint conflict, 5 lock held or lost,
6 a service unreachable or failing after retries.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TextIO

from tqdm import tqdm

from connector.backfill import BackfillRange
from connector.checkpoint import check_feed_name
from connector.deadletter import parse_age
from connector.errors import ConnectorError
from connector.mapping import parse_datetime
from connector.ports import ProgressCallback
from connector.redact import scrub
from connector.report import RunReport, render_fields, render_status, report_fields, status_fields
from connector.runner import (
    DeadLetterPurge,
    purge_dead_letters,
    quiet_sdk_loggers,
    read_status,
    run_feed,
    unlock,
    utc_now,
)
from connector.windows import Window


def _timestamp(text: str) -> datetime:
    try:
        return parse_datetime(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time like 2026-01-20T00:00:00Z"
        ) from None


def _age(text: str) -> timedelta:
    try:
        return parse_age(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _feed(text: str) -> str:
    try:
        return check_feed_name(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to document the commands in the README)."""
    parser = argparse.ArgumentParser(
        prog="python -m connector",
        description="Exchange Online message trace → Microsoft Sentinel EmailEvents_CL.",
    )
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default) or ERROR")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the live feed once (same code path as the timer)")
    status = commands.add_parser("status", help="high-water mark, lag, ledger size, last run, backfills")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    backfill = commands.add_parser(
        "backfill", help="load a past range [start, end) without moving the live high-water mark"
    )
    backfill.add_argument("--start", required=True, type=_timestamp, help="inclusive, ISO 8601 UTC")
    backfill.add_argument("--end", required=True, type=_timestamp, help="exclusive, ISO 8601 UTC")
    unlock_cmd = commands.add_parser(
        "unlock",
        help="break the lock a killed run left on a feed (never one whose run is alive on this host)",
    )
    unlock_cmd.add_argument(
        "--feed",
        default="live",
        type=_feed,
        help="live (default) or backfill/<start>_<end> (as `status` names it)",
    )
    unlock_cmd.add_argument(
        "--force",
        action="store_true",
        help="break it although it was renewed within the last renewal interval (only if you know its run is dead)",
    )
    purge = commands.add_parser(
        "purge-dead-letters",
        help="delete dead letters (raw records: addresses, subjects) last written more than AGE ago",
    )
    purge.add_argument(
        "--older-than", required=True, type=_age, metavar="AGE", help="whole days or hours: 30d, 12h"
    )
    purge.add_argument(
        "--dry-run", action="store_true", help="list the documents that would go; delete nothing"
    )
    _add_check_command(commands)
    return parser


def _add_check_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``check``: verify a deployment end to end (see :mod:`connector.check`)."""
    check = commands.add_parser(
        "check",
        help="verify a deployment: tokens, Graph permission, storage, lock; one line per check with its fix",
    )
    check.add_argument(
        "--write-test-row",
        action="store_true",
        help="also prove the DCR role by uploading one row marked Status=ConnectorTest",
    )


def _run_check(write_test_row: bool, out: TextIO) -> int:
    from connector.check import check_command  # the check's wiring loads only for this command
    from connector.settings import Settings

    return check_command(Settings.from_env(), write_test_row=write_test_row, now=utc_now(), out=out)


@contextmanager
def _progress_bar(enabled: bool, label: str) -> Iterator[ProgressCallback | None]:
    if not enabled:
        yield None
        return
    bar = tqdm(
        total=0,
        unit="h",
        desc=label,
        file=sys.stderr,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} h",
    )

    def update(window: Window, covered_until: datetime) -> None:
        total = window.span / timedelta(hours=1)
        bar.total = round(total, 1)
        bar.n = round((covered_until - window.start) / timedelta(hours=1), 1)
        bar.refresh()

    try:
        yield update
    finally:
        bar.close()


def print_report(report: RunReport, out: TextIO) -> None:
    """One-screen summary of a run."""
    out.write("\n".join(render_fields(report_fields(report), utc_now())) + "\n")


def _print_status(as_json: bool, out: TextIO) -> None:
    checkpoints = read_status()
    now = utc_now()
    if as_json:
        out.write(json.dumps([status_fields(checkpoint, now) for checkpoint in checkpoints], indent=2) + "\n")
    else:
        out.write("\n".join(render_status(checkpoints, now)) + "\n")


def _print_purge(purge: DeadLetterPurge, out: TextIO) -> None:
    """The documents' names in a dry run, then how many; never their content."""
    before = purge.written_before.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if purge.dry_run:
        out.writelines(f"{name}\n" for name in purge.names)
        out.write(f"would delete {len(purge.names)} dead letters last written before {before} (dry run)\n")
    else:
        out.write(f"deleted {len(purge.names)} dead letters last written before {before}\n")


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point; returns the process exit code."""
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.log_level.upper() != "DEBUG":
        quiet_sdk_loggers()
    show_progress = not args.no_progress and sys.stderr.isatty()
    try:
        if args.command == "check":
            return _run_check(args.write_test_row, out)
        if args.command == "status":
            _print_status(args.json, out)
            return 0
        if args.command == "unlock":
            out.write(unlock(args.feed, force=args.force) + "\n")
            return 0
        if args.command == "purge-dead-letters":
            _print_purge(purge_dead_letters(args.older_than, dry_run=args.dry_run), out)
            return 0
        backfill = None
        if args.command == "backfill":
            backfill = BackfillRange(args.start.astimezone(UTC), args.end.astimezone(UTC))
        with _progress_bar(show_progress, "live" if backfill is None else "backfill") as progress:
            report = run_feed(backfill=backfill, progress=progress)
    except ConnectorError as err:
        sys.stderr.write(f"error: {scrub(str(err))}\n")
        return err.exit_code
    print_report(report, out)
    return 0 if report.error is None else report.error.exit_code
