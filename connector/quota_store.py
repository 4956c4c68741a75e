"""Where the tenant's Graph quota budget lives, and the gate every Graph request passes.

The budget (:mod:`connector.quota`) is one small JSON document per tenant,
``quota/<tenant id>.json``, next to the checkpoints, so every run, instance and
command (the timer, ``run``, backfills, later detail calls) shares it. Blob Storage
updates it with ETag conditions: ``If-None-Match: *`` creates it, ``If-Match``
replaces the version that was read. A writer that lost the race re-reads and decides
again, so two holders can never both take the last slot of a window. The local
directory store (``CHECKPOINT_STORE=file``) does the same read-decide-write under an
``flock``.

:class:`QuotaGate` is what :mod:`connector.graph` calls before each message trace
request: it waits for a slot (sleeping on the injected clock's terms) unless the wait
would outlast the run, in which case the slice stops exactly as after a 429
(:class:`~connector.errors.GraphQuotaWaitError`), and it records a 429 that still
happens, so every caller sharing the budget honours its Retry-After.
"""

from __future__ import annotations

import fcntl
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import ContainerClient, ContentSettings

from connector.errors import GraphQuotaWaitError
from connector.ports import Deadline
from connector.quota import Caller, QuotaBudget, QuotaPolicy, admit, throttled
from connector.redact import safe_url
from connector.store import file_error, storage_error

logger = logging.getLogger(__name__)

QUOTA_PREFIX = "quota/"
_R = TypeVar("_R")
Change = Callable[[QuotaBudget], tuple[QuotaBudget | None, _R]]
"""Given the stored budget, the budget to store (None: leave it) and what to answer."""


def quota_blob_name(tenant: str) -> str:
    """``quota/<tenant>.json`` (the tenant id or domain, lower case)."""
    return f"{QUOTA_PREFIX}{tenant.lower()}.json"


class BudgetStore(Protocol):
    """Reads, changes and writes one tenant's budget atomically."""

    def update(self, change: Change[_R]) -> _R:
        """Apply ``change`` to the stored budget; retried on a concurrent write until it applies once."""
        ...


class BlobBudgetStore:
    """The budget as the block blob ``quota/<tenant>.json``, written only with ETag conditions."""

    def __init__(self, container: ContainerClient, tenant: str) -> None:
        self._blob = container.get_blob_client(quota_blob_name(tenant))
        self._written: tuple[QuotaBudget, str] | None = None
        """The budget as this store last wrote it, with the ETag that write returned."""
        self.conflicts = 0
        """Writes that lost a race and were decided again (for tests and the benchmark)."""
        self.reads = 0
        """Reads of the blob (for tests and the benchmark)."""

    def update(self, change: Change[_R]) -> _R:
        """Decide on the stored budget, write ``If-Match`` its ETag (``If-None-Match: *`` when new); re-read on conflict.

        After its own write the store decides on what it wrote instead of reading it back:
        the conditional write is the check, since a budget anyone changed since has another
        ETag and the write is refused (then read afresh and decided again). An answer that
        writes nothing (a wait) is never taken from that copy: it is decided again on a read.
        So a run pacing itself alone costs one request a slot, not two.
        """
        while True:
            written, self._written = self._written, None
            etag: str | None
            if written is not None:
                budget, etag = written
            else:
                budget, etag = self._load()
            after, answer = change(budget)
            if after is None:
                if written is not None:
                    continue
                return answer
            data = after.encode()
            new_etag = self._save(data, etag)
            if new_etag is not None:
                self._written = (QuotaBudget.decode(data), new_etag)  # as a read would give it back
                return answer
            self.conflicts += 1
            if written is None:
                time.sleep(random.uniform(0, 0.02))  # noqa: S311 - jitter, so racing writers do not collide again

    def _load(self) -> tuple[QuotaBudget, str | None]:
        self.reads += 1
        try:
            downloader = self._blob.download_blob()
            data = downloader.readall()
        except ResourceNotFoundError:
            return QuotaBudget(), None
        except AzureError as err:
            raise storage_error(
                f"cannot read the Graph quota budget {safe_url(self._blob.url)}", err
            ) from err
        return QuotaBudget.decode(data), downloader.properties.etag

    def _save(self, data: bytes, etag: str | None) -> str | None:
        """Write if unchanged since read; the new ETag, or None when another writer got there first."""
        conditions = (
            {"match_condition": MatchConditions.IfMissing}
            if etag is None
            else {"etag": etag, "match_condition": MatchConditions.IfNotModified}
        )
        try:
            result = self._blob.upload_blob(
                data,
                overwrite=True,
                content_settings=ContentSettings(content_type="application/json"),
                **conditions,
            )
        except (ResourceModifiedError, ResourceExistsError):
            return None
        except HttpResponseError as err:
            if err.status_code in (409, 412):
                return None
            raise storage_error(
                f"cannot write the Graph quota budget {safe_url(self._blob.url)}", err
            ) from err
        except AzureError as err:
            raise storage_error(
                f"cannot write the Graph quota budget {safe_url(self._blob.url)}", err
            ) from err
        return str(result["etag"])


class FileBudgetStore:
    """The budget as ``<directory>/quota/<tenant>.json``; read-decide-write under an ``flock`` (local runs)."""

    def __init__(self, directory: str | os.PathLike[str], tenant: str) -> None:
        self._path = Path(directory) / quota_blob_name(tenant)

    def update(self, change: Change[_R]) -> _R:
        """Hold the lock file while reading, deciding and atomically replacing the document.

        Raises:
            CheckpointError: the directory cannot be used (a refused path is a permission problem).
        """
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with open(self._path.with_suffix(".lock"), "a+b") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    data = self._path.read_bytes()
                except FileNotFoundError:
                    data = b""
                after, answer = change(QuotaBudget.decode(data) if data else QuotaBudget())
                if after is not None:
                    fd, temporary = tempfile.mkstemp(dir=self._path.parent, prefix=".quota-")
                    with os.fdopen(fd, "wb") as out:
                        out.write(after.encode())
                    os.replace(temporary, self._path)
                return answer
        except OSError as err:
            raise file_error(f"cannot use the Graph quota budget {self._path}", err) from err


class QuotaGate:
    """One caller's view of the shared budget: take a slot before each request, report 429s.

    Implements :class:`connector.ports.RequestGate`.
    """

    def __init__(
        self,
        store: BudgetStore,
        policy: QuotaPolicy,
        caller: Caller,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._store = store
        self._policy = policy
        self._caller = caller
        self._clock = clock
        self._sleep = sleep
        self.waited_seconds = 0.0
        """Time spent waiting for slots (the run report's pacing figure)."""

    def acquire(self, deadline: Deadline) -> None:
        """Wait for a slot and record the request in the shared budget.

        Raises:
            GraphQuotaWaitError: the next slot is further away than the run has left
                (the slice stops and the next run continues, as after a 429).
        """
        while True:

            def take(budget: QuotaBudget) -> tuple[QuotaBudget | None, float]:
                admission = admit(budget, self._policy, self._caller, self._clock())
                return admission.budget, admission.wait

            wait = self._store.update(take)
            if wait <= 0:
                return
            if wait > deadline.remaining():
                raise GraphQuotaWaitError(wait)
            logger.debug("graph quota: waiting %.2f s for a slot (%s)", wait, self._caller.value)
            self.waited_seconds += wait
            self._sleep(wait)

    def throttled(self, retry_after: float | None) -> None:
        """Record a 429 Graph still answered: every caller of the budget waits, the usable limit shrinks."""

        def note(budget: QuotaBudget) -> tuple[QuotaBudget | None, None]:
            return throttled(budget, self._policy, self._clock(), retry_after), None

        self._store.update(note)
        logger.warning(
            "graph answered 429 despite the quota budget; the shared budget shrinks and waits %s",
            "as asked" if retry_after is not None else "one request's spacing",
        )
