"""``python -m connector check``: verify a deployment end to end, one line per check with its fix.

Why: a first deployment fails in many small ways (a role not yet assigned, admin consent
not given, the Transport Data Platform service principal still activating, a lock left
by a killed run), and a timer run shows only the first. ``check`` tries each thing a run
needs, with the run's own settings and credentials, and says for each what to fix:

1. a token for each scope: Graph (``GRAPH_AUTH_MODE``), Logs Ingestion, Blob Storage
   (only for ``STORAGE_ACCOUNT_URL``; a connection string carries its own key), and
   Log Analytics query when ``WORKSPACE_ID`` is set (``AZURE_AUTH_MODE``);
2. Graph answers with the permission: one ``messageTraces`` request over a 1-minute window,
   taken from the tenant's quota budget like any other caller's (``other``: never the live
   feed's reserve); when the budget's blob cannot be read the request goes anyway and says
   so (storage has its own check below: a diagnosis must not stop at it);
   with ``DISCOVER_DOMAINS`` on, also ``GET /domains`` (``Domain.Read.All``): a failure there
   fails the check only when LOCAL_DOMAINS is empty too, since runs then have no domain;
3. storage is writable: a probe blob (``check/probe-<uuid>``) written and deleted;
4. the live feed's lock is free (taken and released at once);
5. only with ``--write-test-row``: the DCR role, by uploading one row marked as a test
   (``Status`` = :data:`TEST_ROW_STATUS`, ``MessageTraceId`` = ``connector-check-<uuid>``).
   No read-only check of that role exists: Logs Ingestion has no call that needs the
   role and writes nothing. The row lands in ``EmailEvents_CL``; queries can drop it with
   ``where Status != "ConnectorTest"``.

The exit code is the worst failure's kind (:data:`SEVERITY`: a setting first, then a
permission, ...), 0 when every check passed. Nothing here changes a checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

from azure.core.exceptions import AzureError

from connector.auth import azure_credential, graph_token_provider
from connector.checkpoint import LIVE_FEED
from connector.errors import (
    SERVICE_PRINCIPAL_APP_ID,
    CheckpointError,
    ConnectorError,
    ErrorKind,
    ServicePrincipalMissingError,
)
from connector.graph import GraphMessageTraceSource
from connector.mapping import RowMapper, format_datetime, parse_trace_record
from connector.ports import Deadline, RequestGate
from connector.quota import Caller
from connector.runner import build_lock, build_quota_gate, build_sink, build_store
from connector.settings import Settings, StoreKind
from connector.store import BlobCheckpointStore, FileCheckpointStore
from connector.tenant_domains import DOMAIN_PERMISSION, discovery_failure
from connector.transport import ConnectorSession, describe_failure
from connector.windows import Window

logger = logging.getLogger(__name__)

TEST_ROW_STATUS = "ConnectorTest"
"""``Status`` of the row ``check --write-test-row`` uploads; no message trace status has this value."""
STORAGE_SCOPE = "https://storage.azure.com/.default"
CHECK_BUDGET = timedelta(seconds=120)
SEVERITY = (
    ErrorKind.SETTING,
    ErrorKind.PERMISSION,
    ErrorKind.FATAL,
    ErrorKind.CONFLICT,
    ErrorKind.LOCK,
    ErrorKind.TRANSIENT,
)
"""Failure kinds, worst first: the exit code is the first of these any check failed with."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check: its name, None when it passed or the kind it failed with, and what to do."""

    name: str
    kind: ErrorKind | None
    detail: str

    @property
    def line(self) -> str:
        """``ok   name  detail`` or ``FAIL name  detail`` (the detail says what to fix)."""
        return f"{'ok' if self.kind is None else 'FAIL':<4} {self.name:<18} {self.detail}"


def _attempt(name: str, action: Callable[[], str], fix: str, default: ErrorKind) -> CheckResult:
    """Run one check: its own words when it passes, the error and ``fix`` when it does not."""
    try:
        return CheckResult(name, None, action())
    except ConnectorError as err:
        return CheckResult(name, err.kind, _with_fix(str(err), err.kind, fix))
    except (AzureError, OSError) as err:
        kind, detail = describe_failure(err, default=default)
        return CheckResult(name, kind, _with_fix(detail, kind, fix))


def _with_fix(detail: str, kind: ErrorKind, fix: str) -> str:
    first = detail.splitlines()[0] if detail else "failed"
    return f"{first}; fix: {fix}" if kind is ErrorKind.PERMISSION and fix else first


def _token(settings: Settings, scope: str) -> Callable[[], str]:
    def get() -> str:
        azure_credential(settings).get_token(scope)
        return f"token for {scope} ({settings.azure_auth_mode.value})"

    return get


def run_checks(settings: Settings, *, write_test_row: bool, now: datetime) -> list[CheckResult]:
    """Every check, in order; each runs even when an earlier one failed."""
    identity = f"AZURE_AUTH_MODE={settings.azure_auth_mode.value}"
    results: list[CheckResult] = []
    deadline = Deadline(CHECK_BUDGET)
    with ExitStack() as resources:
        results.append(
            _attempt(
                "graph token",
                lambda: (
                    graph_token_provider(settings).token()
                    and f"token for {settings.graph_scope} ({settings.graph_auth_mode.value})"
                ),
                "check TENANT_ID, CLIENT_ID and the secret or certificate (GRAPH_AUTH_MODE)",
                ErrorKind.PERMISSION,
            )
        )
        results.append(
            _attempt(
                "ingestion token",
                _token(settings, settings.ingestion_scope),
                f"the identity of {identity} must be able to sign in (az login for developer)",
                ErrorKind.PERMISSION,
            )
        )
        if settings.checkpoint.kind is StoreKind.BLOB and not settings.checkpoint.connection_string:
            results.append(
                _attempt(
                    "storage token",
                    _token(settings, STORAGE_SCOPE),
                    f"the identity of {identity} must be able to sign in",
                    ErrorKind.PERMISSION,
                )
            )
        if settings.workspace_id is not None:
            results.append(
                _attempt(
                    "query token",
                    _token(settings, settings.logs_query_scope),
                    f"the identity of {identity} must be able to sign in",
                    ErrorKind.PERMISSION,
                )
            )
        store = build_store(settings)
        if results[0].kind is None:
            results.append(_graph_check(settings, resources, deadline, now, store))
            if settings.discover_domains:
                results.append(_domains_check(settings, resources, deadline))
        else:
            results.append(
                CheckResult("graph permission", results[0].kind, "not tried: no Graph token (above)")
            )
        results.append(
            _attempt(
                "storage writable",
                lambda: _probe_storage(store),
                f"grant Storage Blob Data Contributor on container {settings.checkpoint.container} "
                f"to the identity of {identity}",
                ErrorKind.FATAL,
            )
        )
        results.append(
            _attempt(
                "lock free",
                lambda: _probe_lock(store, settings),
                "wait for the running run, or `python -m connector unlock` if it was killed",
                ErrorKind.FATAL,
            )
        )
        if write_test_row:
            results.append(_test_row_check(settings, resources, deadline, now, identity))
    return results


def _graph_check(
    settings: Settings,
    resources: ExitStack,
    deadline: Deadline,
    now: datetime,
    store: BlobCheckpointStore | FileCheckpointStore,
) -> CheckResult:
    """One ``messageTraces`` request over the minute before the settle delay, paid from the quota budget."""
    session = ConnectorSession(ca_bundle=settings.ca_bundle, timeout_seconds=settings.http_timeout_seconds)
    resources.callback(session.close)
    end = (now - settings.settle_delay).replace(microsecond=0)
    window = Window(end - timedelta(minutes=1), end)
    gate = _BudgetIfReachable(build_quota_gate(store, settings, Caller.OTHER))

    def read() -> str:
        page = next(_graph_source(settings, session, deadline, gate).pages(window))
        start = window.start.strftime("%Y-%m-%dT%H:%M:%SZ")
        counted = "" if gate.unreachable is None else f"; not counted in the quota budget: {gate.unreachable}"
        return f"messageTraces answered ({len(page.records)} records in the minute from {start}){counted}"

    result = _attempt(
        "graph permission",
        read,
        "grant the application permission ExchangeMessageTrace.Read.All with admin consent",
        ErrorKind.FATAL,
    )
    if result.kind is ErrorKind.PERMISSION and SERVICE_PRINCIPAL_APP_ID in result.detail:
        # The same 401 for a missing and an activating service principal: say both, no grant advice.
        return CheckResult(
            result.name, result.kind, str(ServicePrincipalMissingError("401")).split(". Graph")[0]
        )
    return result


class _BudgetIfReachable:
    """The tenant's quota budget for check's one request; a budget blob it cannot read lets the request go.

    Implements :class:`connector.ports.RequestGate`. Storage is checked on its own line
    below, with its fix; stopping the Graph check at it would hide whether the Graph
    permission works, and one uncounted request is within the headroom pacing leaves.
    """

    def __init__(self, gate: RequestGate) -> None:
        self._gate = gate
        self.unreachable: str | None = None
        """Why the request was not counted (the budget could not be read or written), if it was not."""

    def acquire(self, deadline: Deadline) -> None:
        try:
            self._gate.acquire(deadline)
        except CheckpointError as err:
            self.unreachable = str(err).splitlines()[0]

    def throttled(self, retry_after: float | None) -> None:
        if self.unreachable is None:
            with contextlib.suppress(CheckpointError):
                self._gate.throttled(retry_after)


def _graph_source(
    settings: Settings, session: ConnectorSession, deadline: Deadline, gate: RequestGate | None = None
) -> GraphMessageTraceSource:
    return GraphMessageTraceSource(
        base_url=settings.graph_base_url,
        tokens=graph_token_provider(settings),
        session=session,
        timeout_seconds=settings.http_timeout_seconds,
        max_retries=min(2, settings.http_max_retries),
        backoff_seconds=settings.http_retry_backoff_seconds,
        deadline=deadline,
        gate=gate,
    )


def _domains_check(settings: Settings, resources: ExitStack, deadline: Deadline) -> CheckResult:
    """``GET /domains``: a failure is only a warning while LOCAL_DOMAINS still names a domain."""
    session = ConnectorSession(ca_bundle=settings.ca_bundle, timeout_seconds=settings.http_timeout_seconds)
    resources.callback(session.close)
    fix = f"grant the application permission {DOMAIN_PERMISSION} with admin consent"
    try:
        domains = _graph_source(settings, session, deadline).tenant_domains()
    except ConnectorError as err:
        if settings.local_domains:
            why = discovery_failure(err)
            return CheckResult(
                "graph domains",
                None,
                f"not readable ({why}): runs use LOCAL_DOMAINS alone ({len(settings.local_domains)}); "
                f"to discover them, {fix}",
            )
        return CheckResult(
            "graph domains",
            err.kind,
            _with_fix(discovery_failure(err), err.kind, f"{fix}, or set LOCAL_DOMAINS"),
        )
    shown = ", ".join(domains[:5]) + (", ..." if len(domains) > 5 else "")
    return CheckResult("graph domains", None, f"{len(domains)} verified domains ({shown})")


def _probe_storage(store: object) -> str:
    name = f"check/probe-{uuid.uuid4().hex}"
    if isinstance(store, BlobCheckpointStore):
        container = store.container
        container.upload_blob(name, b"", overwrite=True)
        container.delete_blob(name)
        return f"wrote and deleted {container.container_name}/{name}"
    directory = Path(getattr(store, "directory", ".state"))
    directory.mkdir(parents=True, exist_ok=True)
    probe = directory / name.replace("/", "-")
    probe.write_bytes(b"")
    probe.unlink()
    return f"wrote and deleted {probe}"


def _probe_lock(store: object, settings: Settings) -> str:
    lock = build_lock(store, settings)  # type: ignore[arg-type]
    with lock.hold(LIVE_FEED):
        pass
    return f"the {LIVE_FEED} feed's lock is free (taken and released)"


def _test_row_check(
    settings: Settings, resources: ExitStack, deadline: Deadline, now: datetime, identity: str
) -> CheckResult:
    """Upload one row marked ``Status`` = ConnectorTest: the only way to prove the DCR role."""

    def upload() -> str:
        sink = build_sink(settings, deadline, resources)
        trace_id = f"connector-check-{uuid.uuid4()}"
        domain = (*settings.local_domains, "connector-check.invalid")[0]
        record = parse_trace_record(
            {
                "id": trace_id,
                "senderAddress": f"connector-check@{domain}",
                "recipientAddress": f"connector-check@{domain}",
                "messageId": f"<{trace_id}@{domain}>",
                "receivedDateTime": format_datetime(now),
                "subject": "",
                "size": 0,
                "fromIP": "",
                "toIP": "",
                "status": "delivered",
            }
        )
        row = RowMapper(settings.local_domains, source_tenant_id=settings.source_tenant_id).to_row(
            record, revision=0, previous_status=None
        )
        row["Status"] = TEST_ROW_STATUS
        result = sink.upload([row])
        if result.error is not None:
            raise result.error
        return f"uploaded 1 test row (Status {TEST_ROW_STATUS}, MessageTraceId {trace_id})"

    return _attempt(
        "dcr write",
        upload,
        f"grant Monitoring Metrics Publisher on the DCR {settings.dcr_immutable_id} to the identity of {identity}",
        ErrorKind.FATAL,
    )


def exit_code(results: list[CheckResult]) -> int:
    """0 when every check passed, else the exit code of the worst failure kind (:data:`SEVERITY`)."""
    failed = {result.kind for result in results if result.kind is not None}
    for kind in SEVERITY:
        if kind in failed:
            return kind.exit_code
    return 0


def check_command(settings: Settings, *, write_test_row: bool, now: datetime, out: TextIO) -> int:
    """Run the checks, print one line each, and return the exit code."""
    results = run_checks(settings, write_test_row=write_test_row, now=now)
    out.writelines(result.line + "\n" for result in results)
    return exit_code(results)
