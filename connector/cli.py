"""``python -m connector``: run the live feed, show status, backfill, unlock, purge, check, write look-alikes.

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
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Never, NoReturn, TextIO

from tqdm import tqdm

from connector.backfill import BackfillRange, NothingToBackfill
from connector.checkpoint import check_feed_name
from connector.deadletter import parse_age
from connector.detail import render_events
from connector.domains import local_domain
from connector.enrichment import (
    FINAL_STATUSES,
    EnrichRequest,
    check_recipient,
    check_trace_id,
    parse_ids_file,
    parse_statuses,
)
from connector.errors import SERVICE_PRINCIPAL_WAIT, ArgumentError, ConfigError, ConnectorError, ErrorKind
from connector.log_context import tenant_logging
from connector.mapping import format_datetime, parse_datetime
from connector.ports import LockState, ProgressCallback
from connector.queued import DEFAULT_SLICE_HOURS, MAX_SLICE_HOURS, JobStatus, job_status
from connector.reconcile import render_piece
from connector.redact import scrub
from connector.report import (
    STATUS_LABEL_WIDTH,
    RunReport,
    backfill_finished,
    live_start,
    render_fields,
    render_status,
    report_fields,
    shown_feeds,
    status_fields,
)
from connector.runner import (
    DeadLetterPurge,
    FeedStatus,
    QueuedBackfill,
    enqueue_backfill,
    forget_backfill,
    load_settings,
    message_detail,
    poison_messages,
    purge_dead_letters,
    quiet_sdk_loggers,
    read_status,
    run_feed,
    tenant_scopes,
    unlock,
    utc_now,
)
from connector.settings import TENANT_NAME
from connector.state import Checkpoint
from connector.subjects import KEY_FORMAT, SubjectMode, SubjectPolicy, parse_hash_key
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


def _slice_hours(text: str) -> timedelta:
    try:
        hours = float(text)
    except ValueError:
        hours = float("nan")
    if not 1 <= hours <= MAX_SLICE_HOURS or hours * 3600 != int(hours * 3600):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of hours from 1 to {MAX_SLICE_HOURS:g} (whole seconds)"
        )
    return timedelta(hours=hours)


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(text: str) -> str:
    if text.upper() not in _LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(_LOG_LEVELS)}")
    return text.upper()


class _Parser(argparse.ArgumentParser):
    """Refuses a bad argument in one line (exit 2), pointing at ``--help`` instead of printing the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


if TYPE_CHECKING:
    from connector.reconcile_command import Announcement, Reconciliation

    _Commands = argparse._SubParsersAction[_Parser]


def _tenant(text: str) -> str:
    if not TENANT_NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a tenant name of TENANTS (lower-case letters, digits, '-')"
        )
    return text


def _add_tenant(parser: argparse.ArgumentParser, *, all_when_left_out: bool = False) -> None:
    """``--tenant NAME``: which entry of ``TENANTS`` the command works on (required when it is set)."""
    parser.add_argument(
        "--tenant",
        type=_tenant,
        metavar="NAME",
        help="the tenant of TENANTS to work on ("
        + ("every tenant when left out" if all_when_left_out else "required when TENANTS is set")
        + "; leave it out for a single-tenant deployment)",
    )


def _add_run(commands: _Commands) -> None:
    run = commands.add_parser(
        "run",
        help="run the live feed once (same code path as the timer)",
        description="Run the live feed once, exactly as a timer tick does, and print a summary. "
        "Ctrl-C stops at the next safe point (what is stored is committed; running again resumes); "
        "a second Ctrl-C aborts at once.",
    )
    _add_tenant(run)


def _add_status(commands: _Commands) -> None:
    status = commands.add_parser(
        "status",
        help="high-water mark, lag, lock holder, ledger size, last run, backfills",
        description="Show each feed's stored progress: high-water mark, lag, who holds its lock, "
        "ledger size and last run. Finished backfills are hidden unless --all. Needs only the "
        "checkpoint store's settings.",
    )
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("--all", action="store_true", help="also show finished backfills")
    _add_tenant(status, all_when_left_out=True)


def _add_backfill(commands: _Commands) -> None:
    backfill = commands.add_parser(
        "backfill",
        help="load a past range [start, end) without moving the live high-water mark",
        description="Load message trace of a past range [start, end) with its own progress record. "
        "Stops where the live feed starts; refuses a range overlapping another backfill or wholly "
        "older than Graph's 90-day retention, before taking any lock. Re-running the same range "
        "resumes it. Ctrl-C stops at the next safe point.",
    )
    backfill.add_argument("--start", required=True, type=_timestamp, help="inclusive, ISO 8601 UTC")
    backfill.add_argument("--end", required=True, type=_timestamp, help="exclusive, ISO 8601 UTC")
    _add_tenant(backfill)
    backfill.add_argument(
        "--on-azure",
        action="store_true",
        help="claim the range and enqueue one message per slice on the Storage queue BACKFILL_QUEUE; the "
        "function app's queue trigger stores them (needs the blob store); re-running resumes",
    )
    backfill.add_argument(
        "--slice-hours",
        type=_slice_hours,
        metavar="H",
        help=f"with --on-azure: hours per slice (message), up to {MAX_SLICE_HOURS:g}; default "
        f"{DEFAULT_SLICE_HOURS:g}, or the span the job was queued with",
    )


def _add_forget_backfill(commands: _Commands) -> None:
    forget = commands.add_parser(
        "forget-backfill",
        help="remove the record of a backfill that stored nothing",
        description="Remove a backfill's progress record so its range can be claimed again. "
        "Refused for a backfill that stored any row (finished or not): those records guard "
        "against an overlapping re-run storing rows twice.",
    )
    forget.add_argument(
        "--feed", required=True, type=_feed, help="backfill/<start>_<end> as `status` names it"
    )
    _add_tenant(forget)


def _add_unlock(commands: _Commands) -> None:
    unlock_cmd = commands.add_parser(
        "unlock",
        help="break the lock a killed run left on a feed (never one whose run is alive on this host)",
        description="Break the lock (blob lease) a killed run left on a feed instead of waiting for "
        "it to expire. Refuses while its run may be alive. Needs only the checkpoint store's settings.",
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
    _add_tenant(unlock_cmd)


def _add_purge(commands: _Commands) -> None:
    purge = commands.add_parser(
        "purge-dead-letters",
        help="delete dead letters (raw records: addresses, subjects) last written more than AGE ago",
        description="Delete the dead letters (raw message trace records) whose last write is older "
        "than AGE; prints how many, never their content. Needs only the checkpoint store's settings.",
    )
    purge.add_argument(
        "--older-than", required=True, type=_age, metavar="AGE", help="whole days or hours: 30d, 12h"
    )
    purge.add_argument(
        "--dry-run", action="store_true", help="list the documents that would go; delete nothing"
    )
    _add_tenant(purge)


def _add_check(commands: _Commands) -> None:
    check = commands.add_parser(
        "check",
        help="verify a deployment: tokens, Graph permission, storage, lock; one line per check with its fix",
        description="Verify a deployment end to end with the settings of a run: a token for each scope, "
        "Graph answers with the message trace permission, the checkpoint storage is writable, the feed's "
        "lock is free. Prints one line per check with its fix; exits with the worst failure's code.",
    )
    check.add_argument(
        "--write-test-row",
        action="store_true",
        help="also prove the DCR role by uploading one row marked Status=ConnectorTest",
    )
    _add_tenant(check)


def _add_detail(commands: _Commands) -> None:
    detail = commands.add_parser(
        "detail",
        help="print one message's journey to one recipient (Graph getDetailsByRecipient)",
        description="Print the events Exchange Online recorded for one message and one recipient "
        "(received, spam-filter verdicts, transport rules, delivered, quarantined, failed), as "
        "Get-MessageTraceDetail does. One request (more if Graph pages the answer) from the tenant's "
        "Graph quota budget, never from the live feed's reserve.",
    )
    detail.add_argument("--trace-id", required=True, help="the MessageTraceId of the row")
    detail.add_argument("--recipient", required=True, help="the RecipientAddress of the row")
    detail.add_argument("--json", action="store_true", help="machine-readable output")
    _add_tenant(detail)


def _requests(text: str, *, most: int | None = None) -> int:
    """A number of Graph requests: 1 or more, at most ``most`` when given."""
    if not text.isdigit() or int(text) < 1 or (most is not None and int(text) > most):
        upper = "1 or more" if most is None else f"from 1 to {most}"
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of requests {upper}")
    return int(text)


def _add_reconcile(commands: _Commands) -> None:
    reconcile = commands.add_parser(
        "reconcile",
        help="compare Graph with the table for a range, hour by hour; --repair sends exactly what is missing",
        description="Read message trace of [start, end) from Graph again and compare it, one clock hour at a "
        "time, with what EmailEvents_CL holds (through the workspace query, WORKSPACE_ID): per hour, rows "
        "missing (Graph's current status not stored) and rows duplicated (the same RowId more than once). "
        "Says how many Graph requests it will spend before the first one; they come from the tenant's "
        "quota budget, never from the live feed's reserve. With --repair, sends exactly the missing rows "
        "through the live feed's ledger and intent, holding its lock. Exit 0 when nothing is missing "
        "(after a repair), 1 when rows are still missing.",
    )
    reconcile.add_argument("--start", required=True, type=_timestamp, help="inclusive, ISO 8601 UTC")
    reconcile.add_argument("--end", required=True, type=_timestamp, help="exclusive, ISO 8601 UTC")
    reconcile.add_argument(
        "--repair", action="store_true", help="send the missing rows (duplicates cannot be deleted)"
    )
    reconcile.add_argument(
        "--max-requests",
        type=_requests,
        metavar="N",
        help="refuse to start when the range needs more Graph requests than this",
    )
    reconcile.add_argument("--json", action="store_true", help="machine-readable output")
    _add_tenant(reconcile)


def _domain(text: str) -> str:
    try:
        return local_domain(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_subject_hash(commands: _Commands) -> None:
    subject_hash = commands.add_parser(
        "subject-hash",
        help="print the value SUBJECT_MODE=hash stores for a subject, to search the table for it",
        description="Compute what the connector stores in Subject for this subject in SUBJECT_MODE=hash "
        "(HMAC-SHA256 under SUBJECT_HASH_KEY, the same code as the connector), so an analyst holding the "
        "key can search EmailEvents_CL for it. Reads SUBJECT_HASH_KEY and nothing else; no network.",
    )
    subject_hash.add_argument(
        "subject",
        help="the subject exactly as sent; '-' reads it from standard input (keeps it out of the shell "
        "history and the process list; one trailing line break is dropped)",
    )


def _add_lookalikes(commands: _Commands) -> None:
    lookalikes = commands.add_parser(
        "lookalikes",
        help="write the look-alike domain watchlist CSV (offline: no DNS, no storage)",
        description="Generate look-alike permutations of the organisation's domains with dnstwist, offline "
        "(nothing is resolved or looked up), and write them as the Sentinel watchlist CSV the look-alike "
        "rule reads. The organisation's own domains never appear. Then redeploy the Bicep.",
    )
    lookalikes.add_argument(
        "--domain",
        action="append",
        default=[],
        type=_domain,
        help="a domain to imitate (repeat for more); default: the LOCAL_DOMAINS setting",
    )
    lookalikes.add_argument(
        "--output",
        type=Path,
        help="the CSV to write; default infra/sentinel/Watchlists/LookalikeDomains.csv of this checkout",
    )
    lookalikes.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 when the file differs from what would be generated",
    )
    lookalikes.add_argument(
        "--unicode-homoglyphs",
        action="store_true",
        help="also list dnstwist's Unicode (xn--) homoglyphs: thousands per domain, few fit the watchlist",
    )


class _PairAction(argparse.Action):
    """``--trace-id`` and ``--recipient`` in their command-line order: a recipient belongs to the trace id before it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        order: list[tuple[str, str]] = list(getattr(namespace, "pair_order", None) or [])
        order.append((self.dest, str(values)))
        namespace.pair_order = order


def _max_requests(text: str) -> int:
    return _requests(text, most=100)


def _add_enrich(commands: _Commands) -> None:
    enrich = commands.add_parser(
        "enrich",
        help="store chosen messages' journeys (detail events) in MessageTraceDetail_CL",
        description="Read the detail events (Graph getDetailsByRecipient) of chosen messages and store one row "
        "per event in MessageTraceDetail_CL: pairs named by --trace-id/--recipient, an --ids-file a playbook "
        "wrote, or the messages whose newest status in EmailEvents_CL is one of --status within --start/--end. "
        "One Graph request per pair from the tenant's quota budget (never the live feed's reserve), at most "
        "--max-requests; pairs stored already are skipped, so running again adds nothing twice. Needs "
        "WORKSPACE_ID.",
    )
    enrich.add_argument(
        "--trace-id",
        dest="trace_id",
        action=_PairAction,
        metavar="GUID",
        help="a MessageTraceId (repeatable); followed by --recipient for one recipient, else every recipient "
        "EmailEvents_CL holds for it",
    )
    enrich.add_argument(
        "--recipient",
        dest="recipient",
        action=_PairAction,
        metavar="ADDR",
        help="the recipient of the --trace-id before it",
    )
    enrich.add_argument(
        "--ids-file",
        type=Path,
        metavar="PATH",
        help="lines of 'trace id[,recipient]', or a CSV whose header names MessageTraceId (and RecipientAddress)",
    )
    enrich.add_argument(
        "--status",
        metavar="S[,S]",
        help=f"newest statuses to choose ({', '.join(FINAL_STATUSES)}), with --start and --end",
    )
    enrich.add_argument("--start", type=_timestamp, help="with --status: received at or after, ISO 8601 UTC")
    enrich.add_argument("--end", type=_timestamp, help="with --status: received before, ISO 8601 UTC")
    enrich.add_argument(
        "--max-requests",
        type=_max_requests,
        metavar="N",
        help="Graph requests this run may spend at most (1-100; default DETAIL_MAX_REQUESTS, 50)",
    )
    enrich.add_argument("--json", action="store_true", help="machine-readable counts")
    _add_tenant(enrich)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (also used to document the commands in the README)."""
    parser = _Parser(
        prog="python -m connector",
        description="Exchange Online message trace → Microsoft Sentinel EmailEvents_CL.",
    )
    parser.add_argument(
        "--log-level", default="WARNING", type=_log_level, help="DEBUG, INFO, WARNING (default) or ERROR"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_run(commands)
    _add_status(commands)
    _add_backfill(commands)
    _add_forget_backfill(commands)
    _add_unlock(commands)
    _add_purge(commands)
    _add_check(commands)
    _add_detail(commands)
    _add_reconcile(commands)
    _add_enrich(commands)
    _add_lookalikes(commands)
    _add_subject_hash(commands)
    return parser


class _ProgressLine:
    """The progress bar of ``run`` and ``backfill``: hours covered, rows stored, rows/s and time left.

    Created at the first report (when the window is planned), so it never shows an
    empty ``0/0``. The time left is extrapolated from the share of the window covered
    so far; rows/s counts the rows this run stored.
    """

    def __init__(self, label: str, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._label = label
        self._monotonic = monotonic
        self._started = monotonic()
        self._bar: tqdm[Never] | None = None

    def update(self, window: Window, covered_until: datetime, rows: int) -> None:
        total = window.span / timedelta(hours=1)
        done = min(total, max(0.0, (covered_until - window.start) / timedelta(hours=1)))
        bar = self._bar
        if bar is None:
            size = shutil.get_terminal_size((100, 24))
            bar = self._bar = tqdm(
                total=total,
                desc=self._label,
                file=sys.stderr,
                # The terminal's size (COLUMNS/LINES first); one that reports none (0x0, a bare pty) gets
                # 100x24: tqdm would draw a 0-column line, or hide the bar below a 0-row screen.
                ncols=size.columns,
                nrows=size.lines,
                bar_format="{desc}: {percentage:3.0f}%|{bar}|",
            )
        elapsed = max(self._monotonic() - self._started, 1e-6)
        left = "-" if done <= 0 else _duration(elapsed * (total - done) / done)
        bar.n = done
        stats = f"{done:.1f}/{total:.1f} h, {rows:,} rows, {rows / elapsed:,.0f} rows/s, ETA {left}"
        bar.bar_format = "{desc}: {percentage:3.0f}%|{bar}| " + stats
        bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _duration(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


@contextmanager
def _progress_bar(enabled: bool, label: str) -> Iterator[ProgressCallback | None]:
    if not enabled:
        yield None
        return
    line = _ProgressLine(label)
    try:
        yield line.update
    finally:
        line.close()


@contextmanager
def _stop_on_ctrl_c(err: TextIO) -> Iterator[Callable[[], bool]]:
    """First Ctrl-C: ask the run to stop at its next safe point. Second: abort at once.

    The run checks the request where it checks its time budget (between pages and
    slices), so what it read is uploaded and committed and the next run resumes there.
    """
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def handler(signum: int, frame: object) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()
        err.write(
            "\nstopping at the next safe point (committing what was read); Ctrl-C again aborts at once\n"
        )
        err.flush()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGINT, previous)


def print_report(report: RunReport, out: TextIO) -> None:
    """One-screen summary of a run."""
    out.write("\n".join(render_fields(report_fields(report), utc_now())) + "\n")


def _queued_jobs(feeds: Sequence[Checkpoint], locks: Mapping[str, LockState]) -> dict[str, JobStatus]:
    """Each backfill queued on Azure with its slices' states (and the poison queue's count, read once)."""
    jobs = [c.progress for c in feeds if c.progress.queue_plan is not None]
    if not jobs:
        return {}
    slices = {c.progress.feed: c for c in feeds if c.progress.feed.count("/") == 2}
    poison = poison_messages()
    start = live_start(feeds)
    return {
        job.feed: job_status(job, slices, locks, live_start=start, poison_messages=poison) for job in jobs
    }


def _print_status(as_json: bool, show_all: bool, out: TextIO, tenant: str | None = None) -> int:
    """Print every feed (of every tenant of ``TENANTS``, or of ``tenant``).

    The exit code is 3 once a feed has waited a day for Graph's permission.
    """
    documents: list[dict[str, object]] = []
    waited_too_long = False
    for scope in tenant_scopes(tenant=tenant):
        if scope is not None and not as_json:
            out.write(f"tenant {scope}\n")
        waited_too_long |= _print_feeds(
            read_status(tenant=scope), show_all, out, documents if as_json else None
        )
        if scope is not None:
            for document in documents:
                document.setdefault("tenant", scope)
    if as_json:
        out.write(json.dumps(documents, indent=2) + "\n")
    return ErrorKind.PERMISSION.exit_code if waited_too_long else 0


def _print_feeds(
    feeds: Sequence[FeedStatus], show_all: bool, out: TextIO, documents: list[dict[str, object]] | None
) -> bool:
    """One tenant's feeds, as text on ``out`` or as documents added to ``documents``.

    Returns True when a feed has waited a day or more for Graph's permission.
    """
    now = utc_now()
    locks = {feed.checkpoint.progress.feed: feed.lock for feed in feeds}
    every = [feed.checkpoint for feed in feeds]
    jobs = _queued_jobs(every, locks)
    # A queued slice is shown under its job; a job is finished once every slice is.
    tops = [c for c in every if c.progress.feed.count("/") < 2]
    done_jobs = {name for name, job in jobs.items() if job.finished}
    shown, hidden = shown_feeds(tops, show_all=show_all)
    if not show_all:
        hidden += sum(1 for c in shown if c.progress.feed in done_jobs)
        shown = [c for c in shown if c.progress.feed not in done_jobs]
    if documents is not None:
        start = live_start(every)
        for checkpoint in shown:
            feed = checkpoint.progress.feed
            document = status_fields(
                checkpoint,
                now,
                locks.get(feed),
                finished=backfill_finished(checkpoint, start) or feed in done_jobs,
            )
            if feed in jobs:
                document["queue"] = jobs[feed].fields()
            documents.append(document)
    else:
        extra = {name: job.lines(STATUS_LABEL_WIDTH) for name, job in jobs.items()}
        out.write("\n".join(render_status(shown, now, locks, hidden=hidden, extra=extra)) + "\n")
    return any(
        checkpoint.progress.waiting_for_permission_since is not None
        and now - checkpoint.progress.waiting_for_permission_since >= SERVICE_PRINCIPAL_WAIT
        for checkpoint in every
    )


def _print_purge(purge: DeadLetterPurge, out: TextIO) -> None:
    """The documents' names in a dry run, then how many; never their content."""
    before = purge.written_before.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if purge.dry_run:
        out.writelines(f"{name}\n" for name in purge.names)
        out.write(f"would delete {len(purge.names)} dead letters last written before {before} (dry run)\n")
    else:
        out.write(f"deleted {len(purge.names)} dead letters last written before {before}\n")


def _status(args: argparse.Namespace, out: TextIO) -> int:
    return _print_status(args.json, args.all, out, args.tenant)


def _unlock(args: argparse.Namespace, out: TextIO) -> int:
    out.write(unlock(args.feed, tenant=args.tenant, force=args.force) + "\n")
    return 0


def _forget_backfill(args: argparse.Namespace, out: TextIO) -> int:
    out.write(forget_backfill(args.feed, tenant=args.tenant) + "\n")
    return 0


def _purge(args: argparse.Namespace, out: TextIO) -> int:
    _print_purge(purge_dead_letters(args.older_than, tenant=args.tenant, dry_run=args.dry_run), out)
    return 0


def _check(args: argparse.Namespace, out: TextIO) -> int:
    from connector.check import check_command  # the check's wiring loads only for this command

    return check_command(
        load_settings(tenant=args.tenant), write_test_row=args.write_test_row, now=utc_now(), out=out
    )


def _detail(args: argparse.Namespace, out: TextIO) -> int:
    detail = message_detail(args.trace_id, args.recipient, tenant=args.tenant)
    if args.json:
        out.write(json.dumps([event.fields() for event in detail.events], indent=2) + "\n")
    else:
        out.write("\n".join(render_events(detail.trace_id, detail.recipient, detail.events)) + "\n")
    return 0


def _enrich_request(args: argparse.Namespace) -> EnrichRequest:
    """The command's selection, checked before any setting is read or network call made (exit 2, one line)."""
    pairs: list[tuple[str, str | None]] = []
    try:
        for option, value in getattr(args, "pair_order", None) or []:
            if option == "trace_id":
                pairs.append((check_trace_id(value), None))
            elif not pairs or pairs[-1][1] is not None:
                raise ValueError("--recipient: must follow the --trace-id it belongs to")
            else:
                pairs[-1] = (pairs[-1][0], check_recipient(value))
        if args.ids_file is not None:
            try:
                text = args.ids_file.read_text(encoding="utf-8", errors="surrogateescape")
            except OSError as err:
                raise ValueError(f"--ids-file: cannot read {args.ids_file}: {err.strerror or err}") from None
            pairs.extend(parse_ids_file(text))
        statuses = parse_statuses(args.status or "")
    except ValueError as err:
        raise ArgumentError(str(err)) from None
    if statuses and (args.start is None or args.end is None):
        raise ArgumentError("--status: needs --start and --end (the receive-time range to choose from)")
    if not statuses and (args.start is not None or args.end is not None or args.status is not None):
        raise ArgumentError("--start/--end: only with --status (name at least one status)")
    if statuses and args.end <= args.start:
        raise ArgumentError("--end: must be after --start")
    if not pairs and not statuses:
        raise ArgumentError("enrich: choose messages with --trace-id, --ids-file or --status")
    return EnrichRequest(
        pairs=tuple(pairs),
        statuses=statuses,
        start=None if args.start is None else args.start.astimezone(UTC),
        end=None if args.end is None else args.end.astimezone(UTC),
        max_requests=args.max_requests,
    )


def _enrich(args: argparse.Namespace, out: TextIO) -> int:
    request = _enrich_request(args)
    from connector.enrich_command import enrich  # the enrichment's wiring loads only for this command

    def announce(text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    report = enrich(request, tenant=args.tenant, announce=announce)
    if args.json:
        out.write(json.dumps(report.fields(), indent=2) + "\n")
    else:
        out.write("\n".join(report.lines()) + "\n")
    if report.error is not None:
        sys.stderr.write(f"error: {scrub(str(report.error))}\n")
        return report.error.exit_code
    return 0


def _lookalikes(args: argparse.Namespace, out: TextIO) -> int:
    from connector.lookalikes_command import lookalikes_command  # dnstwist loads only for this command

    return lookalikes_command(
        args.domain, args.output, check=args.check, unicode_homoglyphs=args.unicode_homoglyphs, out=out
    )


def _subject_hash(args: argparse.Namespace, out: TextIO) -> int:
    raw = os.environ.get("SUBJECT_HASH_KEY")
    if not raw:
        raise ConfigError([("SUBJECT_HASH_KEY", f"is required to hash a subject: {KEY_FORMAT}")])
    try:
        key = parse_hash_key(raw)
    except ValueError as err:
        raise ConfigError([("SUBJECT_HASH_KEY", str(err))]) from None
    subject = sys.stdin.read().removesuffix("\n") if args.subject == "-" else args.subject
    out.write(SubjectPolicy(SubjectMode.HASH, key).digest(subject) + "\n")
    return 0


INTERRUPTED = 130
"""The exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells expect."""


def _print_queued(queued: QueuedBackfill, out: TextIO) -> None:
    """What ``backfill --on-azure`` enqueued, and where to watch it."""
    stop = queued.stop.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.write(
        f"{queued.job}: {queued.slices} slices of {queued.slice_span / timedelta(hours=1):g} h up to {stop} "
        f"on queue {queued.queue}: {queued.enqueued} enqueued"
        + (f" ({queued.requeued_poisoned} poisoned ones again)" if queued.requeued_poisoned else "")
        + f", {queued.done} already done"
        + (
            f", {queued.beyond_retention} older than Graph's 90-day retention skipped"
            if queued.beyond_retention
            else ""
        )
        + "\n`status` shows each slice; re-run this command to queue unfinished or poisoned slices again\n"
    )


def _run(args: argparse.Namespace, out: TextIO) -> int:
    """``run`` and ``backfill``: a bad range is refused before any lock; Ctrl-C stops cleanly (exit 130)."""
    backfill = None
    if args.command == "backfill":
        backfill = BackfillRange(args.start.astimezone(UTC), args.end.astimezone(UTC))
        if args.slice_hours is not None and not args.on_azure:
            raise ArgumentError("--slice-hours: only with --on-azure (a local backfill sizes its own slices)")
        if args.on_azure:
            try:
                _print_queued(enqueue_backfill(backfill, args.slice_hours, tenant=args.tenant), out)
            except NothingToBackfill as nothing:
                out.write(f"{nothing}\n")
            return 0
    show_progress = not args.no_progress and sys.stderr.isatty()
    try:
        with (
            _stop_on_ctrl_c(sys.stderr) as stop_requested,
            _progress_bar(show_progress, "live" if backfill is None else "backfill") as progress,
        ):
            report = run_feed(
                tenant=args.tenant,
                backfill=backfill,
                progress=progress,
                stop_requested=stop_requested,
                failure_level=logging.INFO,  # the summary below shows the error; once is enough
            )
    except NothingToBackfill as nothing:
        out.write(f"{nothing}\n")
        return 0
    print_report(report, out)
    if report.outcome == "interrupted":
        mark = report.high_water_mark_after
        out.write(
            f"stopped by Ctrl-C: {report.rows_uploaded} rows stored and committed"
            + ("" if mark is None else f", the feed is complete up to {mark.strftime('%Y-%m-%dT%H:%M:%SZ')}")
            + "; run the same command again to resume from there\n"
        )
        return INTERRUPTED
    return 0 if report.error is None else report.error.exit_code


def _reconcile(args: argparse.Namespace, out: TextIO) -> int:
    """``reconcile``: the plan first (on standard error), then each hour with a difference and the totals."""
    from connector.reconcile_command import NothingToReconcile, reconcile  # loads only for this command

    def announce(announcement: Announcement) -> None:
        for note in announcement.plan.notes:
            sys.stderr.write(f"note: {note}\n")
        sys.stderr.write(announcement.text() + "\n")
        sys.stderr.flush()

    try:
        with _stop_on_ctrl_c(sys.stderr) as stop_requested:
            outcome = reconcile(
                args.start,
                args.end,
                tenant=args.tenant,
                repair=args.repair,
                max_requests=args.max_requests,
                announce=announce,
                stop_requested=stop_requested,
            )
    except NothingToReconcile as nothing:
        out.write(f"{nothing}\n")
        return 0
    if args.json:
        out.write(json.dumps(outcome.fields(), indent=2) + "\n")
    else:
        out.write("\n".join(render_reconciliation(outcome)) + "\n")
    if outcome.outcome == "interrupted":
        return INTERRUPTED
    if outcome.repair is not None and outcome.repair.error is not None:
        return outcome.repair.error.exit_code
    if outcome.outcome == "throttled":
        return ErrorKind.TRANSIENT.exit_code
    return 1 if outcome.totals.missing_left else 0


def render_reconciliation(outcome: Reconciliation) -> list[str]:
    """Each hour with a difference, then the totals and what to do."""
    totals = outcome.totals
    lines = [
        render_piece(result) for result in outcome.results if not result.clean or result.unknown_to_graph
    ]
    window = outcome.plan.window
    lines.append(
        f"{totals.pieces} of {len(outcome.plan.pieces)} hours compared ({outcome.graph_requests} Graph requests): "
        f"graph {totals.graph_keys:,} rows, table {totals.table_rows:,}; missing {totals.missing:,} "
        f"({totals.stale:,} stale), duplicated {totals.duplicated:,}, unknown to Graph {totals.unknown_to_graph:,}, "
        f"unreadable {totals.unreadable:,}"
    )
    if outcome.stopped_at is not None:
        why = "Ctrl-C or the time budget" if outcome.outcome == "interrupted" else "Graph's quota"
        lines.append(
            f"stopped at {format_datetime(outcome.stopped_at)} ({why}): run again with --start "
            f"{format_datetime(outcome.stopped_at)} for the rest"
        )
    repair = outcome.repair
    if repair is not None:
        lines.append(
            f"repair: {totals.repaired:,} rows stored, {totals.repair_skipped:,} stored or changed by the live feed "
            f"meanwhile (left to it), {repair.dead_lettered:,} refused and dead-lettered"
            + ("" if repair.error is None else f"; stopped: {repair.error}")
        )
    if totals.missing_left:
        lines.append(
            f"{totals.missing_left:,} rows missing in {format_datetime(window.start)}..{format_datetime(window.end)}"
            + ("" if repair is not None else ": run again with --repair to send exactly those")
        )
    elif totals.pieces == len(outcome.plan.pieces):
        lines.append(
            f"the table holds every row Graph holds for {format_datetime(window.start)}..{format_datetime(window.end)}"
        )
    for feed in outcome.unfinished_backfills:
        lines.append(f"backfill {feed} still writes this range: rows it has not reached yet count as missing")
    for gap in outcome.never_loaded:
        lines.append(
            f"{format_datetime(gap.start)}..{format_datetime(gap.end)} was never loaded by the live feed or a "
            "backfill: its rows count as missing; `backfill` loads it (--repair does not)"
        )
    if totals.duplicated:
        lines.append(
            f"{totals.duplicated:,} duplicated rows cannot be deleted; the MessageTrace parser drops them by RowId"
        )
    return lines


_COMMANDS: dict[str, Callable[[argparse.Namespace, TextIO], int]] = {
    "run": _run,
    "backfill": _run,
    "status": _status,
    "forget-backfill": _forget_backfill,
    "unlock": _unlock,
    "purge-dead-letters": _purge,
    "check": _check,
    "detail": _detail,
    "reconcile": _reconcile,
    "enrich": _enrich,
    "lookalikes": _lookalikes,
    "subject-hash": _subject_hash,
}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point; returns the process exit code."""
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.log_level != "DEBUG":
        quiet_sdk_loggers()
    try:
        with tenant_logging(getattr(args, "tenant", None)):
            return _COMMANDS[args.command](args, out)
    except ConnectorError as err:
        sys.stderr.write(f"error: {scrub(str(err))}\n")
        return err.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(
            "\naborted at once: batches not yet committed are sent again by the next run "
            "(nothing is lost); run the same command again to resume\n"
        )
        return INTERRUPTED
