"""Many tenants, one deployment: each timer tick becomes one queue message per tenant. Pure.

With ``TENANTS`` set, the timer does not read Graph itself: it enqueues one
``tenant-run`` message per enabled tenant on ``TENANT_QUEUE``, and the queue-triggered
function runs that tenant's live feed (:func:`connector.runner.run_tenant_message`). The
Functions host spreads the messages over instances, so tenants run in parallel, each
under its own lock, checkpoint container and Graph quota budget, and one tenant's
failure is its own invocation's: it never delays or fails another tenant's.

A message says "run this tenant's live feed, no earlier than ``tick``". When messages
pile up (instances busy, a tenant slower than the timer), the first one processed runs
the feed and the others find a run that started after their tick: they are *superseded*
and end at once, spending no Graph request. A message that waits longer than
:data:`TENANT_RUN_TTL` expires in the queue; the next tick sends a fresh one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from connector.errors import ConnectorError, ErrorKind
from connector.mapping import format_datetime, parse_datetime
from connector.settings import TENANT_NAME, TenantEntry
from connector.state import FeedProgress

TENANT_RUN_VERSION = 1
TENANT_RUN_KIND = "tenant-run"
TENANT_RUN_TTL = timedelta(hours=1)
"""How long a tick's message may wait in the queue; older ones are superseded by later ticks anyway."""


class TenantRunMessageError(ConnectorError):
    """A message on the tenant queue that is not a tenant run: it fails for good (the poison queue)."""

    default_kind = ErrorKind.FATAL


@dataclass(frozen=True, slots=True)
class TenantRun:
    """One queue message: run the live feed of the tenant ``tenant``, no earlier than ``tick``."""

    tenant: str
    tick: datetime


def tick_runs(tenants: tuple[TenantEntry, ...], tick: datetime) -> list[TenantRun]:
    """The messages of one timer tick: one per enabled tenant, in the order of ``TENANTS``."""
    return [TenantRun(entry.name, tick) for entry in tenants if entry.enabled]


def encode_tenant_run(run: TenantRun) -> str:
    """The message text (the queue client base64-encodes it, as the host expects by default)."""
    return json.dumps(
        {
            "v": TENANT_RUN_VERSION,
            "kind": TENANT_RUN_KIND,
            "tenant": run.tenant,
            "tick": format_datetime(run.tick),
        },
        separators=(",", ":"),
    )


def decode_tenant_run(body: bytes | str) -> TenantRun:
    """Parse and check a tenant-run message.

    Raises:
        TenantRunMessageError: anything else, saying what was wrong (never the body itself).
    """
    expected = (
        f'expected {{"v":{TENANT_RUN_VERSION},"kind":"{TENANT_RUN_KIND}","tenant":"<name>","tick":"...Z"}} '
        "as the timer enqueues it"
    )
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TenantRunMessageError(
            f"tenant queue message is not JSON ({err.__class__.__name__}): {expected}"
        ) from None
    if (
        not isinstance(document, dict)
        or document.get("v") != TENANT_RUN_VERSION
        or document.get("kind") != TENANT_RUN_KIND
    ):
        raise TenantRunMessageError(
            f"tenant queue message is not a version {TENANT_RUN_VERSION} tenant run: {expected}"
        )
    tenant, tick = document.get("tenant"), document.get("tick")
    if not (isinstance(tenant, str) and TENANT_NAME.fullmatch(tenant) and isinstance(tick, str)):
        raise TenantRunMessageError(f"tenant queue message lacks a tenant name or tick: {expected}")
    try:
        return TenantRun(tenant, parse_datetime(tick))
    except ValueError:
        raise TenantRunMessageError(
            f"tenant queue message has a tick that is not ISO 8601: {expected}"
        ) from None


def superseded(run: TenantRun, progress: FeedProgress | None) -> bool:
    """True when a run of the tenant's live feed that did not fail started at or after the message's tick.

    That run read everything the message asked for (a live run reads up to its own
    start), so this one would only spend the tenant's Graph quota again. A run that
    failed supersedes nothing: the host's retry of a transient failure runs again.
    """
    last = None if progress is None else progress.last_run
    if last is None or last.get("outcome") == "failed":
        return False
    started = last_run_started(last)
    return started is not None and started >= run.tick


def last_run_started(last_run: Mapping[str, object]) -> datetime | None:
    """When the feed's last recorded run started (None: the record has no readable start)."""
    started = last_run.get("started")
    if not isinstance(started, str):
        return None
    try:
        return parse_datetime(started)
    except ValueError:
        return None
