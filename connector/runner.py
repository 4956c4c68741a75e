"""Composition root: build the real adapters from settings and run a feed.

The timer function and the CLI both come through :func:`run_feed`, so
``python -m connector run`` exercises exactly the code path of the Azure Function.
Settings are read (and a bad one refused) when a run starts, before any lock or
network call; nothing happens at import.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Mapping
from contextlib import ExitStack, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from azure.monitor.ingestion import LogsIngestionClient
from azure.monitor.query import LogsQueryClient
from azure.storage.blob import ContainerClient

from connector.auth import azure_credential, graph_token_provider
from connector.backfill import BackfillRange, check_forgettable, claim_backfill, precheck_backfill
from connector.checkpoint import BACKFILL_PREFIX, LIVE_FEED, check_feed_name
from connector.detail import TraceEvent, check_detail_request, parse_events
from connector.errors import (
    ArgumentError,
    AuthenticationError,
    BackfillError,
    CheckpointConflictError,
    ConfigError,
    ConnectorError,
    ErrorKind,
    IngestionThrottledError,
    RunLockedError,
    SinkError,
)
from connector.fanout import TenantRun, decode_tenant_run, superseded, tick_runs
from connector.graph import GraphMessageTraceSource
from connector.ingestion import LogsIngestionSink
from connector.locks import BlobRunLock, FileRunLock, process_alive, this_host
from connector.log_context import tenant_logging
from connector.ports import Clock, Deadline, FeedPorts, LockState, ProgressCallback, RunLock
from connector.queued import (
    DEFAULT_SLICE_HOURS,
    MAX_DEQUEUE_COUNT,
    SliceMessage,
    SliceMessageError,
    check_in_plan,
    continuation_delay,
    decode_message,
    is_permanent,
    job_slices,
    with_failure,
)
from connector.quota import Caller
from connector.quota_store import BlobBudgetStore, BudgetStore, FileBudgetStore, QuotaGate
from connector.redact import hide_addresses, scrub
from connector.report import RunReport, backfill_finished, health_row, log_line, report_fields
from connector.schema import load_table_schema
from connector.settings import Settings, StoreKind
from connector.slice_queue import build_slice_queue, build_tenant_queue
from connector.state import Checkpoint, FeedProgress
from connector.store import BlobCheckpointStore, FileCheckpointStore
from connector.sync import FeedSync, SyncPolicy
from connector.transport import ConnectorSession, blob_options, retrying_options
from connector.unlocking import check_unlock, describe_holder
from connector.windows import retention_floor
from connector.workspace import LogAnalyticsVerifier

logger = logging.getLogger(__name__)


def quiet_sdk_loggers(level: int = logging.WARNING) -> None:
    """Keep the Azure SDK's per-request INFO logs (URLs, headers) out of the connector's logs."""
    for name in ("azure", "msal", "urllib3"):
        logging.getLogger(name).setLevel(level)


# Young objects a collection waits for: a run makes several short-lived objects per record read, and
# at the default (700) the collector ran about 2,000 times in a 200 k-record catch-up.
_GC_YOUNG_THRESHOLD = 20_000


def settle_collector() -> None:
    """Tune the garbage collector for a process that has imported everything it will run.

    Called once by the process entry points (``python -m connector``, the function app),
    after their imports: the modules' own objects move out of the collector's reach
    (``gc.freeze``), so a full collection no longer walks them, and young collections
    wait for more objects. Measured on a 193 k-record catch-up: collections took 1.1 s of
    the connector's ~15 CPU-seconds, 0.16 s with this. Nothing is kept alive that would
    otherwise be freed: only what exists at the call is frozen.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(_GC_YOUNG_THRESHOLD, middle, old)


def utc_now() -> datetime:
    """The production clock."""
    return datetime.now(UTC)


def load_settings(
    env: Mapping[str, str] | None = None, tenant: str | None = None, *, storage_only: bool = False
) -> Settings:
    """The settings of one run or command, scoped to ``tenant`` when ``TENANTS`` lists several.

    ``storage_only`` reads only what the checkpoint store needs (:meth:`Settings.for_storage`).

    Raises:
        ConfigError: a bad setting (before any lock or network call).
        ArgumentError: ``--tenant`` missing while ``TENANTS`` is set, given while it is not, or unknown.
    """
    settings = Settings.for_storage(env) if storage_only else Settings.from_env(env)
    if tenant is None:
        if settings.multi_tenant:
            raise ArgumentError(
                f"--tenant: this deployment reads several tenants (TENANTS): name one of "
                f"{', '.join(settings.tenant_names())}"
            )
        return settings
    if not settings.multi_tenant:
        raise ArgumentError(
            "--tenant: TENANTS is not set, so this deployment reads one tenant (TENANT_ID); leave it out"
        )
    try:
        return settings.for_tenant(tenant)
    except KeyError as err:
        raise ArgumentError(f"--tenant: {err.args[0]}") from None


def tenant_scopes(env: Mapping[str, str] | None = None, tenant: str | None = None) -> list[str | None]:
    """The tenants a command that may cover all of them (``status``) covers: ``[None]`` for one tenant.

    Raises:
        ConfigError: a bad store setting.
        ArgumentError: ``tenant`` is given but unknown, or ``TENANTS`` is not set.
    """
    settings = Settings.for_storage(env)
    if tenant is not None:
        load_settings(env, tenant, storage_only=True)  # checks the name
        return [tenant]
    return list(settings.tenant_names()) if settings.multi_tenant else [None]


def build_store(settings: Settings) -> BlobCheckpointStore | FileCheckpointStore:
    """The checkpoint store that ``CHECKPOINT_STORE`` selects."""
    location = settings.checkpoint
    if location.kind is StoreKind.FILE:
        return FileCheckpointStore(location.directory or ".state")
    tls = blob_options(settings)
    if location.connection_string:
        container = ContainerClient.from_connection_string(
            location.connection_string, location.container, **tls
        )
    else:
        container = ContainerClient(
            location.account_url or "", location.container, credential=azure_credential(settings), **tls
        )
    return BlobCheckpointStore(container, journal_min_bytes=settings.checkpoint_journal_min_bytes)


def build_lock(store: BlobCheckpointStore | FileCheckpointStore, settings: Settings) -> RunLock:
    """The per-feed run lock next to the checkpoint (blob lease, or flock for the file store)."""
    if isinstance(store, BlobCheckpointStore):
        return BlobRunLock(store.container, lease_seconds=settings.lock_lease_seconds)
    return FileRunLock(store.directory)


def build_sink(
    settings: Settings, deadline: Deadline, resources: ExitStack, *, stream_name: str | None = None
) -> LogsIngestionSink:
    """The Logs Ingestion sink of the DCR the settings name; ``resources`` closes its client.

    ``stream_name`` picks another stream of the same DCR (the health rows'); the
    mail stream (``DCR_STREAM_NAME``) by default.
    """

    def ingestion_client(fresh: bool) -> LogsIngestionClient:
        return LogsIngestionClient(
            settings.ingestion_endpoint,
            azure_credential(settings, fresh=fresh),
            credential_scopes=[settings.ingestion_scope],
            **retrying_options(settings, deadline),
        )

    sink = LogsIngestionSink(
        ingestion_client,
        rule_id=settings.dcr_immutable_id,
        stream_name=stream_name or settings.dcr_stream_name,
    )
    resources.callback(sink.close)
    return sink


def build_quota_gate(
    store: BlobCheckpointStore | FileCheckpointStore,
    settings: Settings,
    caller: Caller,
    sleep: Callable[[float], None] | None = None,
) -> QuotaGate:
    """The tenant's shared Graph quota budget, kept next to the checkpoints (``quota/<tenant>.json``)."""
    tenant = settings.graph_tenant_id
    budget: BudgetStore = (
        BlobBudgetStore(store.container, tenant)
        if isinstance(store, BlobCheckpointStore)
        else FileBudgetStore(store.directory, tenant)
    )
    if sleep is None:
        return QuotaGate(budget, settings.graph_quota, caller)
    return QuotaGate(budget, settings.graph_quota, caller, sleep=sleep)


def build_graph_source(
    settings: Settings,
    store: BlobCheckpointStore | FileCheckpointStore,
    deadline: Deadline,
    resources: ExitStack,
    *,
    caller: Caller,
    sleep: Callable[[float], None] | None = None,
    prefetch: bool = False,
) -> GraphMessageTraceSource:
    """Graph message trace behind the tenant's quota budget (as ``caller``); ``resources`` closes it."""
    session = ConnectorSession(
        ca_bundle=settings.ca_bundle, timeout_seconds=settings.http_timeout_seconds, connection_retries=0
    )
    resources.callback(session.close)
    source = GraphMessageTraceSource(
        base_url=settings.graph_base_url,
        tokens=graph_token_provider(settings),
        session=session,
        timeout_seconds=settings.http_timeout_seconds,
        max_retries=settings.http_max_retries,
        backoff_seconds=settings.http_retry_backoff_seconds,
        deadline=deadline,
        **({} if sleep is None else {"sleep": sleep}),
        gate=build_quota_gate(store, settings, caller, sleep),
        prefetch=prefetch,
    )
    resources.callback(source.close)
    return source


def build_query_client(settings: Settings, deadline: Deadline, resources: ExitStack) -> LogsQueryClient:
    """The Log Analytics query client of ``WORKSPACE_ID``'s API; ``resources`` closes it."""
    client = LogsQueryClient(
        azure_credential(settings),
        credential_scopes=[settings.logs_query_scope],
        endpoint=settings.logs_query_endpoint,
        **retrying_options(settings, deadline),
    )
    resources.callback(client.close)
    return client


def shared_table_tenant(settings: Settings) -> str | None:
    """The tenant id a query must keep to when several tenants share the table; None otherwise.

    In a shared table, a row of another tenant with the same identity is not this tenant's.
    """
    shared = settings.tenant is not None and not settings.tenant.own_destination
    return settings.source_tenant_id if shared else None


@dataclass(frozen=True, slots=True)
class Connector:
    """The wired connector for one run: the loop and the lock it runs under."""

    sync: FeedSync
    lock: RunLock


def build_connector(
    settings: Settings,
    resources: ExitStack,
    *,
    clock: Clock = utc_now,
    progress: ProgressCallback | None = None,
    sleep: Callable[[float], None] | None = None,
    stop_requested: Callable[[], bool] | None = None,
    caller: Caller = Caller.LIVE,
) -> Connector:
    """Build Graph source, ingestion sink, store, verifier and lock; ``resources`` closes the clients.

    ``stop_requested`` (Ctrl-C on the command line) ends the run at its next safe point,
    where the budget is checked. ``caller`` is who the run is to the tenant's Graph quota
    budget: the live feed, or a backfill (which leaves the live reserve alone).
    """
    deadline = Deadline(settings.run_time_budget, stop_requested=stop_requested)
    store = build_store(settings)
    source = build_graph_source(
        settings, store, deadline, resources, caller=caller, sleep=sleep, prefetch=True
    )

    sink = build_sink(settings, deadline, resources)
    verifier: LogAnalyticsVerifier | None = None
    if settings.workspace_id is not None:
        verifier = LogAnalyticsVerifier(
            build_query_client(settings, deadline, resources),
            workspace_id=settings.workspace_id,
            table=load_table_schema().table,
            source_tenant_id=shared_table_tenant(settings),
        )
    lock = build_lock(store, settings)
    sync = FeedSync(
        FeedPorts(
            source=source,
            sink=sink,
            store=store,
            dead_letters=store,
            verifier=verifier,
            claims=lock,
            domains=source if settings.discover_domains else None,
        ),
        SyncPolicy.from_settings(settings),
        clock=clock,
        deadline=deadline,
        progress=progress,
    )
    return Connector(sync=sync, lock=lock)


def log_report(report: RunReport, *, failure_level: int = logging.ERROR) -> None:
    """One structured summary line per run (no subjects, no secrets).

    A failed run's line is logged at ``failure_level``: ERROR for the timer (the
    function app's one record of it); the command line prints its own summary with the
    error and passes INFO, so an operator reads the error once.
    """
    fields = report_fields(report)
    level = failure_level if report.error else logging.INFO
    logger.log(level, "message trace sync %s", log_line(fields), extra={"connector_run": fields})


HEALTH_WRITE_BUDGET = timedelta(seconds=30)
"""How long the health row may take: it is sent after the run's own budget, and must not hold the timer."""


def write_health_row(report: RunReport, settings: Settings, *, clock: Clock = utc_now) -> None:
    """Send the run's one ``MessageTraceHealth_CL`` row; never raise, never change the run.

    Best effort by design: the row is sent after the checkpoint work, through its own
    client to the health stream of the same DCR, so it cannot touch a mail row, the
    checkpoint, the outcome or the exit code. A failure is one warning (the error's
    kind and scrubbed text, never a token) and ``health_row=failed`` in the report;
    the missing row is what the health rule's "no health row" check then sees.

    A run stopped by the very path the row takes sends none (``skipped``): Entra ID (no
    token, a refusal, a Retry-After longer than the run) or Logs Ingestion (unreachable,
    refusing, throttled). Asking again at once would ignore what the service just
    answered; the health rule's "no health row" check sees the silence instead.
    """
    if not settings.health_rows:
        report.health_row = "off"
        return
    if isinstance(report.error, AuthenticationError | SinkError) or isinstance(
        report.throttled, IngestionThrottledError
    ):
        report.health_row = "skipped"
        return
    row = health_row(report, clock())
    try:
        with ExitStack() as resources:
            sink = build_sink(
                settings,
                Deadline(HEALTH_WRITE_BUDGET),
                resources,
                stream_name=settings.health_stream_name,
            )
            result = sink.upload([row])
        failure = None if not result.failed_indexes else str(result.error or "the row was refused")
    except Exception as err:  # noqa: BLE001 - any failure of the health row must leave the run as it is
        failure = f"{type(err).__name__}: {str(err)[:300]}"
    if failure is None:
        report.health_row = "sent"
        return
    report.health_row = "failed"
    logger.warning(
        "health row for feed %s not written to %s: %s; the run itself is unaffected",
        report.feed,
        settings.health_stream_name,
        hide_addresses(scrub(failure)),
        extra={"connector_health_row": {"feed": report.feed, "stream": settings.health_stream_name}},
    )


def run_feed(
    env: Mapping[str, str] | None = None,
    *,
    tenant: str | None = None,
    backfill: BackfillRange | None = None,
    clock: Clock = utc_now,
    progress: ProgressCallback | None = None,
    stop_requested: Callable[[], bool] | None = None,
    failure_level: int = logging.ERROR,
) -> RunReport:
    """Run the live feed once (what each timer tick does), or the backfill of a past range.

    A backfill's range is checked against the store (read-only) before the lock is
    taken or Graph is called, so a bad range costs nothing and leaves nothing behind.

    ``tenant`` names the ``TENANTS`` entry to run (required when it is set).

    Raises:
        ConfigError: a bad setting, before any lock or network call.
        ArgumentError: ``tenant`` missing, unexpected or unknown (:func:`load_settings`).
        BackfillError: a range that overlaps another backfill or lies beyond retention.
        NothingToBackfill: a range in the future or inside the live feed.
    """
    settings = load_settings(env, tenant)
    if backfill is not None:
        precheck_backfill(build_store(settings), backfill, now=clock(), settle_delay=settings.settle_delay)
    return _run_scoped(
        settings,
        backfill=backfill,
        clock=clock,
        progress=progress,
        stop_requested=stop_requested,
        failure_level=failure_level,
    )


def _run_scoped(
    settings: Settings,
    *,
    backfill: BackfillRange | None = None,
    clock: Clock = utc_now,
    progress: ProgressCallback | None = None,
    stop_requested: Callable[[], bool] | None = None,
    failure_level: int = logging.ERROR,
) -> RunReport:
    """Run the live feed or a backfill with settings already read (and scoped to a tenant)."""
    with ExitStack() as resources:
        connector = build_connector(
            settings,
            resources,
            clock=clock,
            progress=progress,
            stop_requested=stop_requested,
            caller=Caller.LIVE if backfill is None else Caller.OTHER,
        )
        with connector.lock.hold(LIVE_FEED if backfill is None else backfill.feed) as held:
            if backfill is None:
                report = connector.sync.run_live(lock=held)
            else:
                report = connector.sync.run_backfill(backfill.start, backfill.end, lock=held)
    # After the lock is released and the checkpoint is written: nothing of the feed depends on it.
    write_health_row(report, settings, clock=clock)
    log_report(report, failure_level=failure_level)
    return report


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """One feed's stored progress and who holds its lock now (``status``)."""

    checkpoint: Checkpoint
    lock: LockState


def read_status(env: Mapping[str, str] | None = None, tenant: str | None = None) -> list[FeedStatus]:
    """Load the live checkpoint and every backfill record (of ``tenant``), each with its lock's holder.

    Reads only the store's settings (:meth:`Settings.for_storage`): ``status`` never
    calls Graph or Logs Ingestion.
    """
    settings = load_settings(env, tenant, storage_only=True)
    store = build_store(settings)
    lock = build_lock(store, settings)
    found = (store.load(feed) for feed in [LIVE_FEED, *store.list_feeds(BACKFILL_PREFIX)])
    return [
        FeedStatus(stored.checkpoint, lock.inspect(stored.checkpoint.progress.feed))
        for stored in found
        if stored is not None
    ]


def _check_feed(feed: str) -> None:
    """Refuse a feed name that is not ``live`` or a backfill's, before settings, storage or a lock."""
    try:
        check_feed_name(feed)
    except ValueError as err:
        raise ArgumentError(f"--feed: {err}") from None


def unlock(
    feed: str = LIVE_FEED,
    env: Mapping[str, str] | None = None,
    *,
    tenant: str | None = None,
    force: bool = False,
    clock: Clock = utc_now,
) -> str:
    """Break the lock a killed run left on a feed, unless its run may be alive; return the line to show.

    Raises:
        ArgumentError: ``feed`` is not a feed's name (before settings are read).
        RunLockedError: the holder is alive on this host, the lock is an flock, or it was
            renewed within one renewal interval and ``force`` is not set (see :mod:`connector.unlocking`).
    """
    _check_feed(feed)
    settings = load_settings(env, tenant, storage_only=True)
    lock = build_lock(build_store(settings), settings)
    state = lock.inspect(feed)
    if not state.held:
        return f"{feed}: the lock is already free (no run holds it); nothing to unlock"
    now = clock()
    check_unlock(state, feed=feed, now=now, this_host=this_host(), process_alive=process_alive, force=force)
    lock.break_lock(feed, seen=state)
    return f"lock on {feed} broken (was held by {describe_holder(state, now)})"


def forget_backfill(feed: str, env: Mapping[str, str] | None = None, *, tenant: str | None = None) -> str:
    """Delete the record of a backfill that stored nothing, so its range can be claimed again.

    Holds the feed's lock (no run of it may be going) and deletes only the version it
    checked (:func:`connector.backfill.check_forgettable`).

    Raises:
        ArgumentError: ``feed`` is not a backfill's name.
        BackfillError: no such record, or its backfill stored rows.
        RunLockedError: a run of that backfill holds its lock.
    """
    _check_feed(feed)
    if not feed.startswith(BACKFILL_PREFIX):
        raise ArgumentError(
            f"--feed: {feed} is not a backfill (backfill/<start>_<end>, as `status` names it)"
        )
    settings = load_settings(env, tenant, storage_only=True)
    store = build_store(settings)
    with build_lock(store, settings).hold(feed):
        stored = store.load(feed)
        if stored is None:
            raise BackfillError(f"{feed}: no such backfill record (`status --all` lists them)")
        check_forgettable(stored.checkpoint)
        if store.list_feeds(f"{feed}/"):
            raise BackfillError(
                f"{feed} was queued on Azure and its slices keep their own records: its record stays, "
                "re-run the same `backfill --on-azure` command to resume it"
            )
        store.delete(feed, stored.etag)
    return f"{feed}: record removed (it had stored nothing); its range can be backfilled again"


@dataclass(frozen=True, slots=True)
class DeadLetterPurge:
    """What ``purge-dead-letters`` deleted (or, in a dry run, would delete): names only, never content."""

    written_before: datetime
    names: list[str]
    dry_run: bool


def purge_dead_letters(
    older_than: timedelta,
    env: Mapping[str, str] | None = None,
    *,
    tenant: str | None = None,
    dry_run: bool = False,
    clock: Clock = utc_now,
) -> DeadLetterPurge:
    """Delete the dead letters (raw records) last written more than ``older_than`` ago.

    Raises:
        ArgumentError: ``older_than`` is not positive (before settings are read).
    """
    if older_than <= timedelta(0):
        raise ArgumentError("--older-than: must be more than 0 (like 30d or 12h)")
    store = build_store(load_settings(env, tenant, storage_only=True))
    written_before = clock() - older_than
    return DeadLetterPurge(
        written_before=written_before,
        names=store.purge_dead_letters(written_before, dry_run=dry_run),
        dry_run=dry_run,
    )


@dataclass(frozen=True, slots=True)
class QueuedBackfill:
    """What ``backfill --on-azure`` did: the job, its slices, and how many it enqueued."""

    job: str
    queue: str
    slice_span: timedelta
    stop: datetime
    slices: int
    done: int
    enqueued: int
    requeued_poisoned: int
    beyond_retention: int


def enqueue_backfill(
    request: BackfillRange,
    slice_span: timedelta | None = None,
    env: Mapping[str, str] | None = None,
    *,
    tenant: str | None = None,
    clock: Clock = utc_now,
) -> QueuedBackfill:
    """Claim ``request`` as a backfill run on Azure and enqueue one message per unfinished slice.

    The claim is a local backfill's (same lock, same overlap refusal, same stop at the
    live feed's start); the plan goes in the job's document and each slice gets its own
    (``<job>/<start>_<end>``) before its message is sent, so ``status`` shows it queued.
    Re-running the same command resumes: finished slices are skipped, poisoned ones are
    queued again. Needs only the storage settings (the queue is in the same account).

    Raises:
        ConfigError: the file store, or no queue endpoint for the account (before any network call).
        BackfillError: as a local backfill; or the range runs locally, or with another slice span.
        NothingToBackfill: the range lies in the future or inside the live feed.
    """
    settings = load_settings(env, tenant, storage_only=True)
    queue = build_slice_queue(settings)
    store = build_store(settings)
    try:
        now = clock()
        precheck_backfill(store, request, now=now, settle_delay=settings.settle_delay)
        if slice_span is None:
            stored = store.load(request.feed)
            plan = None if stored is None else stored.checkpoint.progress.queue_plan
            slice_span = timedelta(hours=DEFAULT_SLICE_HOURS) if plan is None else plan.slice_span
        queue.ensure()
        stop = claim_backfill(store, build_lock(store, settings), request, queued=slice_span)
        job = store.load(request.feed)
        if job is None:  # pragma: no cover - the claim just wrote it
            raise BackfillError(f"{request.feed}: the claimed record is missing; run the command again")
        live = store.load(LIVE_FEED)
        live_start = None if live is None else live.checkpoint.progress.coverage_start
        floor = retention_floor(now)
        counts = {"slices": 0, "done": 0, "enqueued": 0, "requeued_poisoned": 0, "beyond_retention": 0}
        for window in job_slices(job.checkpoint.progress):
            counts["slices"] += 1
            if window.end <= floor:
                counts["beyond_retention"] += 1  # Graph cannot read it any more: nothing to queue
                continue
            message = SliceMessage(request.feed, window.start, window.end, tenant=tenant)
            outcome = _prepare_slice(store, message, live_start)
            if outcome == "done":
                counts["done"] += 1
                continue
            if outcome == "requeued":
                counts["requeued_poisoned"] += 1
            queue.send(message)
            counts["enqueued"] += 1
        result = QueuedBackfill(
            job=request.feed, queue=queue.name, slice_span=slice_span, stop=stop, **counts
        )
    finally:
        queue.close()
    logger.info(
        "backfill %s queued on %s: %d slices, %d done, %d enqueued (%d poisoned ones again)",
        result.job,
        result.queue,
        result.slices,
        result.done,
        result.enqueued,
        result.requeued_poisoned,
    )
    return result


def _prepare_slice(
    store: BlobCheckpointStore | FileCheckpointStore, message: SliceMessage, live_start: datetime | None
) -> str:
    """Create the slice's record (``queued``), say it is ``done``, or clear its poisoned mark (``requeued``)."""
    stored = store.load(message.feed)
    if stored is None:
        progress = FeedProgress(feed=message.feed, range_start=message.start, range_end=message.end)
        with suppress(CheckpointConflictError):  # a concurrent re-run created it: queued all the same
            store.save(Checkpoint(progress=progress, ledger={}), None)
        return "queued"
    if backfill_finished(stored.checkpoint, live_start):
        return "done"
    progress = stored.checkpoint.progress
    failure = progress.slice_failure
    if failure is None or not failure.poisoned:
        return "queued"
    unpoisoned = replace(progress, slice_failure=replace(failure, poisoned=False))
    with suppress(CheckpointConflictError):  # a delivery is writing it: being run, queued all the same
        store.save(Checkpoint(progress=unpoisoned, ledger=stored.checkpoint.ledger), stored.etag, ())
    return "requeued"


def run_queued_slice(
    body: bytes | str,
    *,
    attempt: int,
    env: Mapping[str, str] | None = None,
    clock: Clock = utc_now,
) -> RunReport:
    """Run one slice of a backfill queued on Azure (the queue trigger's whole work); raise on failure.

    The slice runs as a backfill of its own range under its own document and lock,
    without a claim of its own (its job claimed the whole range), under the tenant's
    quota budget like any backfill. A slice that stops unfinished (run budget, Graph's
    quota, an unconfirmed batch) enqueues its own continuation and returns normally, so
    it burns no delivery. A failure is recorded in the slice's document with the
    delivery count ``attempt``; on the last delivery (``MAX_DEQUEUE_COUNT``) or for a
    failure no retry fixes (a setting, a permission, a fault) it is recorded as
    poisoned, since the host's poison queue keeps no reason. Then it raises, so the host
    retries the message or moves it to the poison queue.

    Raises:
        SliceMessageError: the message is not a slice of a queued job (never dropped silently).
        ConnectorError: the slice's run failed (after recording it), or another delivery of
            the same slice holds its lock (retried; on the last delivery that one returns).
    """
    message = decode_message(body)
    with tenant_logging(message.tenant):
        return _run_queued_slice(message, attempt=attempt, env=env, clock=clock)


def _run_queued_slice(
    message: SliceMessage, *, attempt: int, env: Mapping[str, str] | None, clock: Clock
) -> RunReport:
    try:
        settings = _slice_settings(message, env)
    except ConfigError as err:
        _record_outside(message, err, attempt=attempt, env=env, clock=clock)
        raise
    store = build_store(settings)
    job = store.load(message.job)
    check_in_plan(message, None if job is None else job.checkpoint.progress)
    mine = store.load(message.feed)
    if mine is not None and backfill_finished(mine.checkpoint, None):
        # Delivered again after it finished (the host died before deleting the message, or the
        # command queued it twice): nothing to read, so no run, no lock, no journal line.
        logger.info("%s is already done; this delivery ends here", message.feed)
        return RunReport(feed=message.feed, started=clock(), outcome="up_to_date")
    failure = None if mine is None else mine.checkpoint.progress.slice_failure
    if failure is not None and failure.poisoned and attempt > 1:
        raise SliceMessageError(
            f"{message.feed} was given up on an earlier delivery ({failure.reason}); not run again until "
            "the same `backfill --on-azure` command queues it again"
        )
    try:
        with ExitStack() as resources:
            connector = build_connector(settings, resources, clock=clock, caller=Caller.OTHER)
            with connector.lock.hold(message.feed) as held:
                report = connector.sync.run_backfill(
                    message.start, message.end, lock=held, queued_slice=message.feed
                )
                if report.error is not None:
                    _record_failure(store, message.feed, report.error, attempt=attempt, now=clock())
    except RunLockedError:
        if attempt >= MAX_DEQUEUE_COUNT:
            # Another delivery of this slice runs it and carries it on (its own continuation or retry).
            logger.warning("%s is run by another delivery; this duplicate message ends here", message.feed)
            return RunReport(feed=message.feed, started=clock())
        raise
    except ConnectorError as err:
        _record_outside(message, err, attempt=attempt, env=env, clock=clock)
        raise
    write_health_row(report, settings, clock=clock)
    log_report(report)
    if report.error is not None:
        raise report.error
    delay = continuation_delay(report.outcome)
    if delay is not None:
        queue = build_slice_queue(settings)
        try:
            queue.send(message, delay=delay)
        finally:
            queue.close()
        logger.info("%s stopped %s; its continuation is queued", message.feed, report.outcome)
    return report


def _slice_settings(
    message: SliceMessage, env: Mapping[str, str] | None, *, storage_only: bool = False
) -> Settings:
    """The settings of the tenant whose backfill the slice is (the deployment's own without TENANTS).

    Raises:
        ConfigError: a bad setting.
        SliceMessageError: the message names a tenant ``TENANTS`` no longer lists, or none while it is set.
    """
    try:
        return load_settings(env, message.tenant, storage_only=storage_only)
    except ArgumentError as err:
        raise SliceMessageError(f"{message.feed}: {str(err).removeprefix('--tenant: ')}") from None


def _record_failure(
    store: BlobCheckpointStore | FileCheckpointStore,
    feed: str,
    error: ConnectorError,
    *,
    attempt: int,
    now: datetime,
) -> None:
    """Write the failure into the slice's document (the caller holds the slice's lock)."""
    stored = store.load(feed)
    if stored is None:
        return
    poisoned = is_permanent(error) or attempt >= MAX_DEQUEUE_COUNT
    progress = with_failure(stored.checkpoint.progress, error, attempt=attempt, poisoned=poisoned, now=now)
    store.save(Checkpoint(progress=progress, ledger=stored.checkpoint.ledger), stored.etag, ())
    logger.log(
        logging.ERROR if poisoned else logging.WARNING,
        "%s failed on delivery %d of %d%s: %s",
        feed,
        attempt,
        MAX_DEQUEUE_COUNT,
        " (poisoned: the host moves the message to the poison queue)"
        if poisoned
        else "; the host retries it",
        error,
    )


def _record_outside(
    message: SliceMessage,
    error: ConnectorError,
    *,
    attempt: int,
    env: Mapping[str, str] | None,
    clock: Clock,
) -> None:
    """Best effort: record a failure that happened outside the slice's run, under the slice's lock."""
    try:
        settings = _slice_settings(message, env, storage_only=True)
        store = build_store(settings)
        with build_lock(store, settings).hold(message.feed):
            _record_failure(store, message.feed, error, attempt=attempt, now=clock())
    except ConnectorError as err:
        logger.warning("%s: could not record its failure in its record (%s)", message.feed, err)


def poison_messages(env: Mapping[str, str] | None = None) -> int | None:
    """Messages in the backfill queue's poison queue (``status``); None when it cannot be read."""
    settings = Settings.for_storage(env)
    try:
        queue = build_slice_queue(settings)
    except ConfigError:
        return None
    try:
        return queue.poison_count()
    finally:
        queue.close()


@dataclass(frozen=True, slots=True)
class TickFanOut:
    """What one timer tick of a deployment with ``TENANTS`` did: the tenants whose run it enqueued."""

    queue: str
    tenants: tuple[str, ...]
    disabled: tuple[str, ...]


def run_tick(env: Mapping[str, str] | None = None, *, clock: Clock = utc_now) -> RunReport | TickFanOut:
    """What the timer does each tick: run the live feed, or with ``TENANTS`` enqueue one run per tenant.

    Raises:
        ConfigError: a bad setting (the tick fails visibly; nothing is enqueued).
        ConnectorError: the live feed's run failed (one tenant), or the tenant queue refused a message.
    """
    settings = Settings.from_env(env)
    if not settings.multi_tenant:
        report = _run_scoped(settings, clock=clock)
        if report.error is not None:
            raise report.error
        return report
    return fan_out_tick(settings, clock=clock)


def fan_out_tick(settings: Settings, *, clock: Clock = utc_now) -> TickFanOut:
    """Enqueue this tick's run of every enabled tenant on ``TENANT_QUEUE`` (:mod:`connector.fanout`).

    Every tenant is enqueued before an error is raised: one message the queue refused
    does not keep the tenants after it from running.

    Raises:
        ConnectorError: the queue refused at least one message (the first error; each one logged).
    """
    runs = tick_runs(settings.tenants, clock())
    queue = build_tenant_queue(settings)
    sent: list[str] = []
    first_error: ConnectorError | None = None
    try:
        queue.ensure()
        for run in runs:
            try:
                queue.send_tenant_run(run)
                sent.append(run.tenant)
            except ConnectorError as err:
                logger.error("tenant %s: its run of this tick was not enqueued: %s", run.tenant, err)
                first_error = first_error or err
    finally:
        queue.close()
    result = TickFanOut(
        queue=queue.name,
        tenants=tuple(sent),
        disabled=tuple(entry.name for entry in settings.tenants if not entry.enabled),
    )
    logger.info(
        "tick enqueued the runs of %d tenants on %s%s",
        len(sent),
        result.queue,
        f" ({len(result.disabled)} disabled)" if result.disabled else "",
        extra={
            "connector_tick": {
                "queue": result.queue,
                "tenants": list(sent),
                "disabled": list(result.disabled),
            }
        },
    )
    if first_error is not None:
        raise first_error
    return result


def run_tenant_message(
    body: bytes | str,
    *,
    attempt: int,
    env: Mapping[str, str] | None = None,
    clock: Clock = utc_now,
) -> RunReport | None:
    """Run one tenant's live feed for a tick's message (the tenant queue trigger's whole work).

    Ends at once, spending no Graph request, when the message has nothing left to do:
    the tenant left ``TENANTS`` or was disabled since the tick, a run of its live feed
    started after the tick (:func:`connector.fanout.superseded`), or another run holds
    its lock (that run covers the tick).

    A failed run is logged at ERROR with its reason and sends its health row, as a
    single-tenant timer run does. It raises, so the host delivers the message again,
    only while a retry can help: a transient failure (an unreachable or throttling
    service) before the last delivery. Otherwise the message is consumed: the next tick
    runs the tenant again anyway, and a poison message per tick would say nothing the
    health row and the log line do not.

    Raises:
        TenantRunMessageError: the message is not a tenant run (the host poisons it).
        ConfigError: a bad setting of the deployment.
        ConnectorError: a transient failure of the run, for the host to retry.
    """
    run = decode_tenant_run(body)
    with tenant_logging(run.tenant):
        return _run_tenant(run, attempt=attempt, env=env, clock=clock)


def _run_tenant(
    run: TenantRun, *, attempt: int, env: Mapping[str, str] | None, clock: Clock
) -> RunReport | None:
    settings = Settings.from_env(env)
    try:
        scoped = settings.for_tenant(run.tenant)
    except KeyError:
        logger.warning("tenant %s is no longer in TENANTS; its queued run ends here", run.tenant)
        return None
    if scoped.tenant is not None and not scoped.tenant.enabled:
        logger.info("tenant %s is disabled in TENANTS; its queued run ends here", run.tenant)
        return None
    stored = build_store(scoped).load(LIVE_FEED)
    if superseded(run, None if stored is None else stored.checkpoint.progress):
        logger.info("tenant %s: a run started after this tick's; this message ends here", run.tenant)
        return None
    try:
        report = _run_scoped(scoped, clock=clock)
    except RunLockedError:
        logger.info("tenant %s: its live feed is being run; that run covers this tick", run.tenant)
        return None
    except ConnectorError as err:
        # Failed before its run started (a credential, the store): reported like a failed run.
        report = RunReport(
            feed=LIVE_FEED, started=clock(), tenant=run.tenant, source_tenant_id=scoped.source_tenant_id
        )
        report.fail(err)
        report.finished = clock()
        write_health_row(report, scoped, clock=clock)
        log_report(report)
    error = report.error
    if error is not None and error.kind is ErrorKind.TRANSIENT and attempt < MAX_DEQUEUE_COUNT:
        raise error
    return report


DETAIL_TIME_BUDGET = timedelta(seconds=60)
"""How long ``detail`` may wait (for the quota budget, or Graph's Retry-After) before it says when to try again."""


@dataclass(frozen=True, slots=True)
class MessageDetail:
    """What ``detail`` read: one message's events for one recipient."""

    trace_id: str
    recipient: str
    events: list[TraceEvent]


def message_detail(
    trace_id: str,
    recipient: str,
    env: Mapping[str, str] | None = None,
    *,
    tenant: str | None = None,
) -> MessageDetail:
    """Read the detail events of one (trace id, recipient) from Graph (``detail``).

    The request passes the tenant's Graph quota budget as a backfill's do (the live
    feed's reserve is left alone): Graph counts detail calls against the same 100
    requests per 5 minutes as the list.

    Raises:
        ArgumentError: a trace id that is not a GUID or a recipient that is not an address
            (before settings are read), or a bad ``--tenant``.
        ConfigError: a bad setting.
        ConnectorError: Graph refused or failed, as for a run (its kind is the exit code).
    """
    try:
        trace_id, recipient = check_detail_request(trace_id, recipient)
    except ValueError as err:
        raise ArgumentError(str(err)) from None
    settings = load_settings(env, tenant)
    with ExitStack() as resources:
        deadline = Deadline(min(settings.run_time_budget, DETAIL_TIME_BUDGET))
        source = build_graph_source(settings, build_store(settings), deadline, resources, caller=Caller.OTHER)
        events = parse_events(source.details(trace_id, recipient))
    return MessageDetail(trace_id=trace_id, recipient=recipient, events=events)
