"""``python -m connector``: run the live feed, show status, backfill a past range.

``run`` is the exact code path of the timer function. Settings come from the
environment (see README). Exit codes: 0 done, 1 failed, 2 bad settings or
arguments, 3 an authentication/permission problem, 4 a checkpoint conflict,
5 another run holds the feed's lock.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import TextIO

from tqdm import tqdm

from connector.errors import ConnectorError
from connector.mapping import parse_datetime
from connector.runner import (
    describe_time,
    quiet_sdk_loggers,
    read_status,
    run_backfill,
    run_live,
    unlock,
    utc_now,
)
from connector.sync import ProgressCallback, RunReport
from connector.windows import Window


def _timestamp(text: str) -> datetime:
    try:
        return parse_datetime(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time like 2026-01-20T00:00:00Z"
        ) from None


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
    unlock_cmd = commands.add_parser("unlock", help="break the lock a killed run left on a feed")
    unlock_cmd.add_argument("--feed", default="live", help="live (default) or backfill/<start>_<end>")
    return parser


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
    now = utc_now()
    lag = report.lag(now)
    window = (
        "-"
        if report.window is None
        else f"{describe_time(report.window.start)} .. {describe_time(report.window.end)}"
    )
    lines = [
        f"feed              {report.feed}",
        f"outcome           {report.outcome}",
        f"window            {window}",
        f"high-water mark   {describe_time(report.high_water_mark_before)} -> {describe_time(report.high_water_mark_after)}",
        f"lag               {'-' if lag is None else str(lag).split('.')[0]}",
        f"slices / pages    {report.slices} / {report.pages}",
        f"records read      {report.records_seen}",
        f"rows uploaded     {report.rows_uploaded} (status revisions {report.revisions}) in {report.batches} batches",
        f"duplicates        {report.duplicates_dropped} dropped",
        f"outside range     {report.outside_range}",
        f"dead-lettered     {report.dead_lettered}",
        f"ledger entries    {report.ledger_entries}",
        f"checkpoint saves  {report.checkpoint_saves}",
    ]
    if report.intent_rows_found or report.intent_rows_resent or report.possible_duplicates:
        lines.append(
            f"unconfirmed batch {report.intent_rows_found} rows found in the workspace, "
            f"{report.intent_rows_resent} resent"
        )
        lines.append(f"possible dups     {report.possible_duplicates}")
    if report.unrecoverable:
        lines.append(
            f"NOT FETCHABLE     {report.unrecoverable} of history was older than the 90-day retention"
        )
    if report.error is not None:
        lines.append(f"error             {report.error}")
    out.write("\n".join(lines) + "\n")


def _print_status(as_json: bool, out: TextIO) -> None:
    feeds = read_status()
    now = utc_now()
    if as_json:
        document = [
            {
                "feed": status.feed,
                "high_water_mark": describe_time(status.checkpoint.high_water_mark),
                "lag_seconds": None
                if status.checkpoint.high_water_mark is None
                else int((now - status.checkpoint.high_water_mark).total_seconds()),
                "coverage_start": describe_time(status.checkpoint.coverage_start),
                "ledger_entries": len(status.checkpoint.ledger),
                "possible_duplicates_total": status.checkpoint.possible_duplicates_total,
                "unconfirmed_batch_rows": 0
                if status.checkpoint.pending_batch is None
                else len(status.checkpoint.pending_batch.entries),
                "last_run": None
                if status.checkpoint.last_run is None
                else asdict(status.checkpoint.last_run),
            }
            for status in feeds
        ]
        out.write(json.dumps(document, indent=2) + "\n")
        return
    if not feeds:
        out.write("no checkpoint yet: the connector has not committed a run\n")
        return
    for status in feeds:
        cp = status.checkpoint
        lag = None if cp.high_water_mark is None else now - cp.high_water_mark
        out.write(f"[{status.feed}]\n")
        if cp.range_start is not None:
            out.write(
                f"  range             {describe_time(cp.range_start)} .. {describe_time(cp.range_end)}\n"
            )
        out.write(f"  high-water mark   {describe_time(cp.high_water_mark)}\n")
        out.write(f"  lag               {'-' if lag is None else str(lag).split('.')[0]}\n")
        out.write(f"  coverage start    {describe_time(cp.coverage_start)}\n")
        out.write(f"  ledger entries    {len(cp.ledger)}\n")
        if cp.possible_duplicates_total:
            out.write(
                f"  possible dups     {cp.possible_duplicates_total} rows re-sent after interrupted uploads "
                "(set WORKSPACE_ID to verify instead)\n"
            )
        if cp.pending_batch is not None:
            out.write(f"  unconfirmed batch {len(cp.pending_batch.entries)} rows, resolved by the next run\n")
        if cp.last_run is not None:
            run = cp.last_run
            out.write(
                f"  last run          {run.started} .. {run.finished}: {run.outcome}, {run.rows_uploaded} rows "
                f"({run.revisions} revisions), {run.duplicates_dropped} duplicates dropped\n"
            )
            if run.error:
                out.write(f"  last error        {run.error}\n")


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
        if args.command == "status":
            _print_status(args.json, out)
            return 0
        if args.command == "unlock":
            holder = unlock(args.feed)
            out.write(
                f"lock on {args.feed} broken (was held by {holder})\n"
                if holder
                else f"{args.feed}: no lock held\n"
            )
            return 0
        if args.command == "run":
            with _progress_bar(show_progress, "live") as progress:
                report = run_live(progress=progress)
        else:
            start = args.start.astimezone(UTC)
            end = args.end.astimezone(UTC)
            with _progress_bar(show_progress, "backfill") as progress:
                report = run_backfill(start, end, progress=progress)
    except ConnectorError as err:
        sys.stderr.write(f"error: {err}\n")
        return err.exit_code
    print_report(report, out)
    return 0 if report.error is None else report.error.exit_code
