"""``python -m connector enrich``: chosen messages' journeys into ``MessageTraceDetail_CL``.

The composition of :mod:`connector.enrichment` (pure) with the adapters: the
workspace (which pairs, which are enriched already), Graph's ``getDetailsByRecipient``
behind the tenant's quota budget as :attr:`~connector.quota.Caller.OTHER` (the live
feed's reserve is never used), the Logs Ingestion sink on the detail stream, and the
pending document under the ``enrich`` lock.

Order of a run: refuse bad arguments and settings; take the lock; settle the pending
document (an upload whose outcome is unknown is verified in the workspace once it is
``VERIFY_INGESTION_DELAY_MINUTES`` old, before anything else is sent); choose the pairs;
drop those enriched already; say how many Graph requests it will spend; then per pair:
fetch, record, upload, mark sent. A quota or time budget that runs out stops it between
pairs with what is left said (exit 6: run it again later, nothing is stored twice).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from connector.deadletter import DEAD_LETTER_PREFIX, DeadLetter
from connector.detail import parse_events
from connector.enrich_store import ENRICH_LOCK, MARGIN, BlobPendingStore, DetailWorkspace, FilePendingStore
from connector.enrichment import (
    REFUSED_MEMORY,
    REQUESTED,
    EnrichRequest,
    PendingDetail,
    PendingPair,
    Target,
    detail_rows,
    plan,
    settle,
    unique_targets,
)
from connector.errors import (
    ConfigError,
    ConnectorError,
    ErrorKind,
    SinkError,
    ThrottledError,
    VerificationError,
)
from connector.mapping import parse_datetime
from connector.ports import Clock, DeadLetterSink, Deadline
from connector.quota import Caller
from connector.refusal import MAX_ALONE_WITHOUT_EVIDENCE, Refusal, classify_refusal, deployment_refused
from connector.runner import (
    build_graph_source,
    build_lock,
    build_query_client,
    build_sink,
    build_store,
    load_settings,
    shared_table_tenant,
    utc_now,
)
from connector.schema import DETAIL_SCHEMA_RESOURCE, load_detail_schema, load_table_schema
from connector.settings import Settings, read_enrichment_settings
from connector.store import BlobCheckpointStore, FileCheckpointStore
from connector.windows import Window

logger = logging.getLogger(__name__)

ENRICH_DEAD_LETTERS = "enrich"
"""Dead letters of refused detail rows: ``deadletter/enrich/`` next to the checkpoints."""


@dataclass(slots=True)
class EnrichReport:
    """What an enrich run did (``--json`` prints :meth:`fields`)."""

    pairs: int = 0
    """Distinct (trace id, recipient) pairs chosen."""
    already_enriched: int = 0
    planned_requests: int = 0
    requests: int = 0
    """Graph detail requests spent (one per pair fetched; a paged answer would take more)."""
    events: int = 0
    rows_uploaded: int = 0
    not_found: int = 0
    """Pairs Graph has no events for, and trace ids EmailEvents_CL has no recipient for."""
    over_cap: int = 0
    left: int = 0
    """Pairs planned but not fetched: the quota or the time budget ran out."""
    settled: int = 0
    """Uploads of an earlier run whose outcome was unknown, verified in the workspace."""
    refused: int = 0
    """Pairs whose rows the service refused for their content: dead-lettered, not fetched again."""
    refused_earlier: int = 0
    """Pairs skipped because an earlier run dead-lettered their refused rows."""
    max_requests: int = 0
    error: ConnectorError | None = field(default=None, repr=False)

    def fields(self) -> dict[str, object]:
        """The counts as JSON-ready fields."""
        return {
            "pairs": self.pairs,
            "already_enriched": self.already_enriched,
            "planned_requests": self.planned_requests,
            "requests": self.requests,
            "events": self.events,
            "rows_uploaded": self.rows_uploaded,
            "not_found": self.not_found,
            "over_cap": self.over_cap,
            "left": self.left,
            "settled": self.settled,
            "refused": self.refused,
            "refused_earlier": self.refused_earlier,
            "max_requests": self.max_requests,
            "error": None if self.error is None else str(self.error),
        }

    def lines(self) -> list[str]:
        """The summary for a terminal."""
        text = [
            f"enrich: {self.pairs} pairs chosen, {self.already_enriched} already enriched, "
            f"{self.requests} Graph requests spent of {self.planned_requests} planned (cap {self.max_requests})",
            f"  {self.events} events, {self.rows_uploaded} rows uploaded to MessageTraceDetail_CL, "
            f"{self.not_found} not found",
        ]
        if self.over_cap:
            text.append(f"  {self.over_cap} pairs over the cap left for a later run (--max-requests)")
        if self.left:
            text.append(
                f"  {self.left} pairs left: run the same command again later (nothing is stored twice)"
            )
        if self.settled:
            text.append(f"  {self.settled} uploads of an earlier run settled in the workspace")
        if self.refused:
            text.append(
                f"  {self.refused} pairs refused by the service for their content: dead-lettered under "
                f"{DEAD_LETTER_PREFIX}{ENRICH_DEAD_LETTERS}/ with the reason, not fetched again"
            )
        if self.refused_earlier:
            text.append(
                f"  {self.refused_earlier} pairs skipped: their rows were refused and dead-lettered earlier"
            )
        return text


class _PendingStore:
    """Blob or file pending store, chosen like the checkpoint store."""

    def __init__(self, store: BlobCheckpointStore | FileCheckpointStore) -> None:
        self._store: BlobPendingStore | FilePendingStore = (
            BlobPendingStore(store.container)
            if isinstance(store, BlobCheckpointStore)
            else FilePendingStore(store.directory)
        )

    def load(self) -> PendingDetail:
        return self._store.load()

    def save(self, pending: PendingDetail) -> None:
        self._store.save(pending)


def _check_settings(settings: Settings, stream: str) -> None:
    problems: list[tuple[str, str]] = []
    if settings.workspace_id is None:
        problems.append(
            (
                "WORKSPACE_ID",
                "is required by enrich: it looks up recipients and statuses in EmailEvents_CL and skips pairs "
                "MessageTraceDetail_CL holds already (the identity needs read access to both tables)",
            )
        )
    if stream in (settings.dcr_stream_name, settings.health_stream_name):
        problems.append(("DETAIL_STREAM_NAME", f"must differ from the mail and health streams, got {stream}"))
    if problems:
        raise ConfigError(problems)


def _workspace(
    settings: Settings, deadline: Deadline, resources: ExitStack, now: datetime
) -> DetailWorkspace:
    return DetailWorkspace(
        build_query_client(settings, deadline, resources),
        workspace_id=settings.workspace_id or "",
        detail_table=load_detail_schema().table,
        mail_table=load_table_schema().table,
        source_tenant_id=shared_table_tenant(settings),
        now=now,
    )


def _settle(
    pending: PendingDetail,
    workspace: DetailWorkspace,
    *,
    clock: Clock,
    verify_delay: timedelta,
    deadline: Deadline,
    sleep: Callable[[float], None],
) -> tuple[PendingDetail, frozenset[str], int]:
    """The pending document settled: (what is left of it, pairs accepted moments ago, uploads verified).

    Raises:
        VerificationError: an upload of unknown outcome is too young to verify within this run's
            budget (TRANSIENT: run again after the time it names), or the workspace could not be read.
    """
    settlement = settle(pending, clock(), verify_delay)
    if settlement.wait_until is not None:
        wait = (settlement.wait_until - clock()).total_seconds()
        if wait > deadline.remaining() / 2:
            raise VerificationError(
                f"an earlier enrich stopped while uploading; its rows can be verified in the workspace from "
                f"{settlement.wait_until.strftime('%Y-%m-%dT%H:%M:%SZ')} (ingestion latency, "
                "VERIFY_INGESTION_DELAY_MINUTES): run enrich again after that; nothing is sent before",
                kind=ErrorKind.TRANSIENT,
            )
        logger.info("waiting %.0f s for ingestion latency before verifying an earlier enrich's upload", wait)
        sleep(max(0.0, wait))
        settlement = settle(pending, clock(), verify_delay)
    verified = 0
    if settlement.to_verify:
        since = min(pair.oldest for pair in settlement.to_verify) - MARGIN
        row_ids = [row_id for pair in settlement.to_verify for row_id in pair.row_ids]
        stored = workspace.rows_stored(row_ids, since=since, until=clock() + MARGIN)
        arrived = sum(1 for pair in settlement.to_verify if set(pair.row_ids) <= stored)
        verified = len(settlement.to_verify)
        logger.warning(
            "settled %d uploads an earlier enrich left unconfirmed: %d are in the workspace, %d will be "
            "fetched again when chosen",
            verified,
            arrived,
            verified - arrived,
        )
    settled = pending.without([*settlement.visible, *(pair.key for pair in settlement.to_verify)])
    return settled, settlement.recent, verified


def _targets(request: EnrichRequest, workspace: DetailWorkspace, report: EnrichReport) -> list[Target]:
    targets = [Target(trace_id, recipient) for trace_id, recipient in request.pairs if recipient is not None]
    alone = sorted({trace_id for trace_id, recipient in request.pairs if recipient is None})
    if alone:
        found = workspace.recipients(alone)
        report.not_found += sum(1 for trace_id in alone if not found.get(trace_id))
        targets += [
            Target(trace_id, recipient, REQUESTED)
            for trace_id in alone
            for recipient in found.get(trace_id, [])
        ]
    if request.statuses and request.start is not None and request.end is not None:
        targets += workspace.status_targets(request.statuses, request.start, request.end)
    return unique_targets(targets)


def enrich(
    request: EnrichRequest,
    env: Mapping[str, str] | None = None,
    *,
    tenant: str | None = None,
    clock: Clock = utc_now,
    announce: Callable[[str], None] = lambda text: None,
    sleep: Callable[[float], None] = time.sleep,
) -> EnrichReport:
    """Enrich the chosen pairs into ``MessageTraceDetail_CL``; the report says what was done and left.

    A quota or time budget that runs out between pairs is not raised: it stops the run,
    and the report carries it (``error``) with the pairs ``left``.

    Raises:
        ConfigError: a bad setting, ``WORKSPACE_ID`` unset, or a detail stream equal to another.
        ArgumentError: a bad ``--tenant``.
        ConnectorError: a service refused or failed (its kind is the exit code).
    """
    settings = load_settings(env, tenant)
    extra = read_enrichment_settings(env)
    _check_settings(settings, extra.detail_stream_name)
    max_requests = request.max_requests or extra.max_requests
    report = EnrichReport(max_requests=max_requests)
    with ExitStack() as resources:
        deadline = Deadline(settings.run_time_budget)
        store = build_store(settings)
        workspace = _workspace(settings, deadline, resources, clock())
        pending_store = _PendingStore(store)
        with build_lock(store, settings).hold(ENRICH_LOCK):
            pending, recent, report.settled = _settle(
                pending_store.load(),
                workspace,
                clock=clock,
                verify_delay=settings.verify_delay,
                deadline=deadline,
                sleep=sleep,
            )
            pending = pending.forgetting_refusals_before(clock() - REFUSED_MEMORY)
            pending_store.save(pending)
            targets = _targets(request, workspace, report)
            report.pairs = len(targets)
            enriched = workspace.enriched_pairs([target.trace_id for target in targets]) | recent
            chosen = plan(targets, enriched, max_requests, pending.refused_keys())
            report.already_enriched, report.over_cap = chosen.already, chosen.over_cap
            report.refused_earlier = chosen.refused_earlier
            report.planned_requests = len(chosen.todo)
            announce(
                f"enrich: {report.pairs} pairs chosen, {chosen.already} already enriched; spending "
                f"{len(chosen.todo)} Graph requests (one per pair, more only if Graph pages an answer) "
                f"from the tenant's quota budget, cap {max_requests}"
                + (f"; {chosen.over_cap} pairs over the cap left for a later run" if chosen.over_cap else "")
                + (
                    f"; {chosen.refused_earlier} pairs skipped: their rows were refused and dead-lettered earlier"
                    if chosen.refused_earlier
                    else ""
                )
            )
            if not chosen.todo:
                return report
            source = build_graph_source(
                settings, store, deadline, resources, caller=Caller.OTHER, sleep=sleep
            )
            sink = build_sink(settings, deadline, resources, stream_name=extra.detail_stream_name)

            def remember_refused(key: str) -> None:
                nonlocal pending
                pending = pending.with_refused(key, clock())
                pending_store.save(pending)

            refusals = _Refusals(store, report, remember_refused, clock)
            for done, target in enumerate(chosen.todo):
                if deadline.expired():
                    report.left = len(chosen.todo) - done
                    report.error = ThrottledError(
                        f"enrich used its time budget (RUN_TIME_BUDGET_SECONDS) with {report.left} pairs left: "
                        "run the same command again"
                    )
                    break
                try:
                    records = source.details(target.trace_id, target.recipient)
                except ThrottledError as err:
                    report.left = len(chosen.todo) - done
                    logger.warning(
                        "enrich stopped by the Graph quota with %d pairs left: %s", report.left, err
                    )
                    report.error = ThrottledError(
                        f"{err}. {report.left} pairs left: run the same command again once the quota refills "
                        "(pairs enriched already are skipped)"
                    )
                    break
                report.requests += 1
                events = parse_events(records)
                if not events:
                    report.not_found += 1
                    continue
                rows = detail_rows(
                    target,
                    events,
                    fetched=clock(),
                    source_tenant_id=settings.source_tenant_id,
                    subjects=settings.subjects,
                )
                report.events += len(events)
                pending = pending.with_pair(
                    PendingPair(
                        key=target.key,
                        row_ids=tuple(str(row["RowId"]) for row in rows),
                        created=clock(),
                        sent=False,
                        oldest=min(parse_datetime(str(row["TimeGenerated"])) for row in rows),
                    )
                )
                pending_store.save(pending)
                result = sink.upload(rows)
                if not result.failed_indexes:
                    pending = pending.marked_sent(target.key)
                    pending_store.save(pending)
                    report.rows_uploaded += len(rows)
                    refusals.evidence()
                    continue
                error = _content_refusal(
                    result.error, rows=len(rows), whole=len(result.failed_indexes) == len(rows)
                )
                # The service answered: nothing of the pair was stored. The pair is no longer pending.
                pending = pending.without([target.key])
                pending_store.save(pending)
                refusals.refused(target, rows, error)
            if refusals.held and report.error is None:
                raise refusals.deployment_error()
            report.left += len(refusals.held)  # refused before any pair was stored: fetched again next run
    return report


def _content_refusal(error: ConnectorError | None, *, rows: int, whole: bool) -> SinkError:
    """The error of a refused detail upload if it is about the rows' content; anything else is raised.

    Not about the rows (throttling, an outage, a lost answer), or part of the pair stored
    (the SDK split its rows over requests): the outcome is left to the next run, which
    verifies the pending pair in the workspace. The deployment (the detail table or its
    DCR stream): a setting error.
    """
    if error is None:
        raise VerificationError("logs ingestion did not take the detail rows")
    refusal = classify_refusal(error)
    if refusal is Refusal.NOT_ROWS or not isinstance(error, SinkError) or not whole:
        raise error
    if refusal is Refusal.DEPLOYMENT:
        raise deployment_refused(
            error, rows=rows, why="a column or type of the detail rows", schema_file=DETAIL_SCHEMA_RESOURCE
        )
    return error


class _Refusals:
    """Pairs whose rows the service refused: dead-lettered once the deployment is known to take rows.

    As for mail rows (:mod:`connector.refusal`), content is blamed only with evidence: a
    pair of this run was stored. Until then refused pairs are held, and after
    :data:`MAX_ALONE_WITHOUT_EVIDENCE` of them, or at the end of a run that stored none,
    it is the deployment: nothing is dead-lettered and the run stops with a setting error.
    """

    def __init__(
        self,
        dead_letters: DeadLetterSink,
        report: EnrichReport,
        remember: Callable[[str], None],
        clock: Clock,
    ) -> None:
        self._dead_letters = dead_letters
        self._report = report
        self._remember = remember
        self._clock = clock
        self._stored_any = False
        self.held: list[tuple[Target, list[dict[str, object]], SinkError]] = []

    def evidence(self) -> None:
        """A pair was stored: the deployment takes rows, so the held refusals are about content."""
        self._stored_any = True
        held, self.held = self.held, []
        for target, rows, error in held:
            self._dead_letter(target, rows, error)

    def refused(self, target: Target, rows: list[dict[str, object]], error: SinkError) -> None:
        if self._stored_any:
            self._dead_letter(target, rows, error)
            return
        self.held.append((target, rows, error))
        if len(self.held) >= MAX_ALONE_WITHOUT_EVIDENCE:
            raise self.deployment_error()

    def deployment_error(self) -> SinkError:
        _, rows, error = self.held[-1]
        return deployment_refused(
            error,
            rows=len(rows),
            why=f"every detail row of the {len(self.held)} pairs it was sent",
            schema_file=DETAIL_SCHEMA_RESOURCE,
        )

    def _dead_letter(self, target: Target, rows: list[dict[str, object]], error: SinkError) -> None:
        times = [parse_datetime(str(row["TimeGenerated"])) for row in rows]
        letter = DeadLetter(
            feed=ENRICH_DEAD_LETTERS,
            reason=f"the Logs Ingestion API refused this pair's detail rows ({error.status}): "
            f"{error.service_message or error}",
            # The rows as sent: SUBJECT_MODE was applied when they were made.
            record={"MessageTraceId": target.trace_id, "RecipientAddress": target.recipient, "rows": rows},
            window=Window(min(times), max(times)),
            seen_at=self._clock(),
        )
        where = self._dead_letters.put_dead_letter(letter)
        self._remember(target.key)
        self._report.refused += 1
        # The reason stays in the document: a service's refusal can echo a row's text (enrich logs none).
        logger.warning(
            "the detail rows of one pair were refused (HTTP %s) and dead-lettered with the service's reason to %s; "
            "the pair is not fetched again for %d days",
            error.status,
            where,
            REFUSED_MEMORY.days,
        )
