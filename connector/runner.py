"""Composition root: build the real adapters from settings and run a feed.

The timer function and the CLI both come through here, so ``python -m connector run``
exercises exactly the code path of the Azure Function. Settings are read when a
run starts; nothing happens at import.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from azure.monitor.ingestion import LogsIngestionClient
from azure.monitor.query import LogsQueryClient
from azure.storage.blob import ContainerClient

from connector.auth import azure_credential, graph_token_provider
from connector.checkpoint import LIVE_FEED, Checkpoint, backfill_feed_name
from connector.graph import GraphMessageTraceSource
from connector.httpsession import ConnectorSession
from connector.ingestion import LogsIngestionSink
from connector.locks import BlobRunLock, FileRunLock, RunLock
from connector.mapping import RowMapper, format_datetime
from connector.schema import load_table_schema
from connector.settings import Settings, StoreKind
from connector.store import BlobCheckpointStore, FileCheckpointStore
from connector.sync import Clock, Deadline, FeedSync, ProgressCallback, RunReport
from connector.workspace import LogAnalyticsVerifier

logger = logging.getLogger(__name__)


def quiet_sdk_loggers(level: int = logging.WARNING) -> None:
    """Keep the Azure SDK's per-request INFO logs (URLs, headers) out of the connector's logs."""
    for name in ("azure", "msal", "urllib3"):
        logging.getLogger(name).setLevel(level)


def utc_now() -> datetime:
    """The production clock."""
    return datetime.now(UTC)


def build_store(settings: Settings) -> BlobCheckpointStore | FileCheckpointStore:
    """The checkpoint store that ``CHECKPOINT_STORE`` selects."""
    location = settings.checkpoint
    if location.kind is StoreKind.FILE:
        return FileCheckpointStore(location.directory or ".state")
    transport: dict[str, Any] = {}
    if settings.ca_bundle:
        transport["connection_verify"] = settings.ca_bundle
    if location.connection_string:
        container = ContainerClient.from_connection_string(
            location.connection_string, location.container, **transport
        )
    else:
        container = ContainerClient(
            location.account_url or "", location.container, credential=azure_credential(settings), **transport
        )
    return BlobCheckpointStore(container)


def build_lock(store: BlobCheckpointStore | FileCheckpointStore, settings: Settings) -> RunLock:
    """The per-feed run lock next to the checkpoint (blob lease, or flock for the file store)."""
    if isinstance(store, BlobCheckpointStore):
        return BlobRunLock(store.container, lease_seconds=settings.lock_lease_seconds)
    return FileRunLock(store.directory)


@dataclass(slots=True)
class Connector:
    """The adapters for one run, wired to a :class:`FeedSync`."""

    sync: FeedSync
    source: GraphMessageTraceSource
    sink: LogsIngestionSink
    store: BlobCheckpointStore | FileCheckpointStore
    lock: RunLock
    closers: list[Callable[[], None]] = field(default_factory=list)


@contextmanager
def open_connector(
    settings: Settings,
    *,
    clock: Clock = utc_now,
    progress: ProgressCallback | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Iterator[Connector]:
    """Build Graph source, ingestion sink and checkpoint store; close them afterwards."""
    deadline = Deadline(settings.run_time_budget)
    session = ConnectorSession(
        ca_bundle=settings.ca_bundle, timeout_seconds=settings.http_timeout_seconds, connection_retries=0
    )
    source_kwargs: dict[str, Callable[[float], None]] = {} if sleep is None else {"sleep": sleep}
    source = GraphMessageTraceSource(
        base_url=settings.graph_base_url,
        tokens=graph_token_provider(settings),
        session=session,
        timeout_seconds=settings.http_timeout_seconds,
        max_retries=settings.http_max_retries,
        backoff_seconds=settings.http_retry_backoff_seconds,
        deadline=deadline,
        **source_kwargs,
    )
    client_kwargs: dict[str, Any] = {
        "credential_scopes": [settings.ingestion_scope],
        "retry_total": settings.http_max_retries,
        "retry_backoff_factor": settings.http_retry_backoff_seconds,
        "connection_timeout": settings.http_timeout_seconds,
        "read_timeout": settings.http_timeout_seconds,
    }
    if settings.ca_bundle:
        client_kwargs["connection_verify"] = settings.ca_bundle

    def ingestion_client(fresh: bool) -> LogsIngestionClient:
        credential = azure_credential(settings, fresh=fresh)
        return LogsIngestionClient(settings.ingestion_endpoint, credential, **client_kwargs)

    sink = LogsIngestionSink(
        ingestion_client, rule_id=settings.dcr_immutable_id, stream_name=settings.dcr_stream_name
    )
    store = build_store(settings)
    verifier: LogAnalyticsVerifier | None = None
    query_client: LogsQueryClient | None = None
    if settings.workspace_id is not None:
        query_kwargs: dict[str, Any] = {"endpoint": settings.logs_query_endpoint}
        if settings.ca_bundle:
            query_kwargs["connection_verify"] = settings.ca_bundle
        query_client = LogsQueryClient(
            azure_credential(settings), credential_scopes=[settings.logs_query_scope], **query_kwargs
        )
        verifier = LogAnalyticsVerifier(
            query_client, workspace_id=settings.workspace_id, table=load_table_schema().table
        )
    sync = FeedSync(
        source=source,
        sink=sink,
        store=store,
        dead_letters=store,
        mapper=RowMapper(settings.local_domains),
        clock=clock,
        deadline=deadline,
        overlap_lookback=settings.overlap_lookback,
        settle_delay=settings.settle_delay,
        initial_lookback=settings.initial_lookback,
        max_slice_span=settings.max_slice_span,
        target_records_per_slice=settings.target_records_per_slice,
        ledger_warn_entries=settings.ledger_warn_entries,
        progress=progress,
        verifier=verifier,
        verify_delay=settings.verify_delay,
    )
    connector = Connector(
        sync=sync,
        source=source,
        sink=sink,
        store=store,
        lock=build_lock(store, settings),
        closers=[session.close, sink.close, *([query_client.close] if query_client else [])],
    )
    try:
        yield connector
    finally:
        for close in connector.closers:
            close()


def log_report(report: RunReport) -> None:
    """One structured summary line per run (no subjects, no secrets)."""
    fields = report.as_fields()
    text = " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)
    level = logging.ERROR if report.error else logging.INFO
    logger.log(level, "message trace sync %s", text, extra={"connector_run": fields})


def run_live(
    env: Mapping[str, str] | None = None,
    *,
    clock: Clock = utc_now,
    progress: ProgressCallback | None = None,
) -> RunReport:
    """Run the live feed once (what each timer tick does)."""
    settings = Settings.from_env(env)
    with (
        open_connector(settings, clock=clock, progress=progress) as connector,
        connector.lock.hold(LIVE_FEED) as held,
    ):
        report = connector.sync.run_live(lock=held)
    log_report(report)
    return report


def run_backfill(
    start: datetime,
    end: datetime,
    env: Mapping[str, str] | None = None,
    *,
    clock: Clock = utc_now,
    progress: ProgressCallback | None = None,
) -> RunReport:
    """Backfill ``[start, end)`` with its own progress record."""
    settings = Settings.from_env(env)
    with (
        open_connector(settings, clock=clock, progress=progress) as connector,
        connector.lock.hold(backfill_feed_name(start, end)) as held,
    ):
        report = connector.sync.run_backfill(start, end, lock=held)
    log_report(report)
    return report


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """One feed's checkpoint, for ``status``."""

    feed: str
    checkpoint: Checkpoint


def read_status(env: Mapping[str, str] | None = None) -> list[FeedStatus]:
    """Load the live checkpoint and every backfill record."""
    settings = Settings.from_env(env)
    store = build_store(settings)
    feeds = [LIVE_FEED, *store.list_feeds("backfill/")]
    result = []
    for feed in feeds:
        stored = store.load(feed)
        if stored is not None:
            result.append(FeedStatus(feed=feed, checkpoint=stored.checkpoint))
    return result


def unlock(feed: str = LIVE_FEED, env: Mapping[str, str] | None = None) -> str | None:
    """Break a feed's lock left by a killed run; return who held it, if recorded."""
    settings = Settings.from_env(env)
    return build_lock(build_store(settings), settings).break_lock(feed)


def describe_time(value: datetime | None) -> str:
    """Display form of an optional timestamp."""
    return "-" if value is None else format_datetime(value)
