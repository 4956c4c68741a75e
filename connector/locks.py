"""Single writer: a run holds a lock on its feed from start to end.

The ETag on the checkpoint detects a second writer only when it saves, after it may
already have uploaded rows; a lock stops it before it reads anything. In Azure the
lock is a blob lease on ``locks/<feed>.lock`` (60 s by default, renewed in the
background every third of that); a run killed with the lease held loses it when the
lease expires, and the next run takes over. Locally it is an ``flock`` on a file,
which the kernel releases when the process dies.

A second run gets :class:`~connector.errors.RunLockedError` ("another run holds the
lock since …") and exits non-zero; a caller that expects the holder to be done soon (a
short lock that two starting runs take in turn) passes ``wait_seconds``, and the lock
is tried again every fraction of a second until then. Before each upload the run
checks its lease: when the background renewal has fallen behind (half a lease without
one: a slow storage answer, a retried request, a starved thread) it renews the lease
itself, and only if that fails, or a renewal failed before, does it stop before the
upload (:class:`~connector.errors.LockLostError`) instead of risking a double upload.
Renewing late is safe: the service renews a lease only while nobody else has leased
the blob since, so a renewal that succeeds proves no other run held the lock between.

The holder records itself on the lock (blob metadata, or the flock file's content):
``host``, ``pid``, ``since`` and, for a lease, ``renewed`` (rewritten with every
renewal) and ``lease_seconds``. ``python -m connector unlock`` reads them
(:meth:`BlobRunLock.inspect`) so it never breaks the lease of a run that is still
going (see :mod:`connector.unlocking`).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobLeaseClient, ContainerClient

from connector.errors import LockLostError, RunLockedError
from connector.log_context import in_this_context
from connector.mapping import parse_datetime
from connector.ports import Clock, HeldLock, LockState
from connector.redact import safe_url, scrub
from connector.store import storage_error

logger = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 60
BLOB_POLL_SECONDS = 0.5
"""How often a waiting ``hold`` asks for the lease again (each try is one storage request)."""
FILE_POLL_SECONDS = 0.25
"""How often a waiting ``hold`` tries the flock again (a system call: cheap)."""
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def this_host() -> str:
    """The host name a holder records (and ``unlock`` compares with its own)."""
    return socket.gethostname()


def holder_description() -> str:
    """Who is running: host and process, for the 'lock held by' message."""
    return f"{this_host()} pid {os.getpid()}"


def process_alive(pid: int) -> bool:
    """True if a process ``pid`` exists on this host (signal 0 checks without sending anything)."""
    if pid <= 0:  # 0 and negatives name process groups, not a process
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _holder_record(*, since: datetime, renewed: datetime | None, lease_seconds: int | None) -> dict[str, str]:
    """The holder's fields, ASCII (blob metadata travels in HTTP headers)."""
    record = {
        "holder": holder_description(),
        "host": this_host(),
        "pid": str(os.getpid()),
        "since": since.strftime(_TIME_FORMAT),
    }
    if renewed is not None:
        record["renewed"] = renewed.strftime(_TIME_FORMAT)
    if lease_seconds is not None:
        record["lease_seconds"] = str(lease_seconds)
    return {name: value.encode("ascii", "replace").decode("ascii") for name, value in record.items()}


def _read_record(
    record: dict[str, object], *, where: str, held: bool, version: str | None = None
) -> LockState:
    """A :class:`LockState` from recorded fields; a field missing or unreadable is None."""

    def text(name: str) -> str | None:
        value = record.get(name)
        return value if isinstance(value, str) and value else None

    def number(name: str) -> int | None:
        value = text(name)
        return int(value) if value is not None and value.isascii() and value.isdigit() else None

    def moment(name: str) -> datetime | None:
        value = text(name)
        try:
            return None if value is None else parse_datetime(value)
        except ValueError:
            return None

    return LockState(
        where=where,
        held=held,
        holder=text("holder"),
        host=text("host"),
        pid=number("pid"),
        since=moment("since"),
        renewed=moment("renewed"),
        lease_seconds=number("lease_seconds"),
        version=version,
    )


def _lock_blob_name(feed: str) -> str:
    return f"locks/{feed}.lock"


class _Taken(Exception):
    """Another run holds the lock (one try of a ``hold`` that may wait)."""


class _BlobLease:
    """A held blob lease, renewed by a daemon thread; each renewal is recorded on the blob."""

    def __init__(
        self,
        lease: BlobLeaseClient,
        duration: int,
        monotonic: Callable[[], float],
        record_renewal: Callable[[], None],
    ) -> None:
        self._lease = lease
        self._duration = duration
        self._monotonic = monotonic
        self._record_renewal = record_renewal
        self._renewed_at = monotonic()
        self._failure: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=in_this_context(self._renew_loop), name="checkpoint-lease", daemon=True
        )
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self._duration / 3):
            try:
                self.renew()
            except AzureError as err:
                self._failure = f"renewing the lease failed: {scrub(str(err))}"
                logger.error("lost the checkpoint lock: %s", self._failure)
                return

    def renew(self) -> None:
        """Renew the lease, then record when (``unlock`` reads it to tell a live holder from a dead one).

        A failed record is only logged: the lease itself is renewed, and ``unlock``
        then sees an old renewal; the holder on this host is still protected by its pid.
        """
        self._lease.renew()
        self._renewed_at = self._monotonic()
        try:
            self._record_renewal()
        except AzureError as err:
            logger.warning("could not record the lock renewal: %s", scrub(str(err)))

    def check(self) -> None:
        """Raise if a renewal failed, or if the lease cannot be renewed now that the last renewal is old.

        A renewal older than half the lease is made up here, on the caller's thread: the
        background one is late, and an upload must start with time left on the lease.
        """
        if self._failure is not None:
            raise LockLostError(self._failure)
        age = self._monotonic() - self._renewed_at
        if age <= self._duration / 2:
            return
        try:
            self.renew()
        except AzureError as err:
            self._failure = (
                f"the lease was last renewed {age:.0f} s ago (lease {self._duration} s) and renewing it now "
                f"failed: {scrub(str(err))}"
            )
            raise LockLostError(self._failure) from None
        logger.warning(
            "the checkpoint lock's background renewal was %.0f s late (lease %d s): renewed before the upload",
            age,
            self._duration,
        )

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            self._lease.release()
        except AzureError as err:  # it expires on its own; the next run takes over
            logger.warning("could not release the checkpoint lock: %s", scrub(str(err)))


class BlobRunLock:
    """Per-feed lease on ``locks/<feed>.lock`` in the checkpoint container."""

    def __init__(
        self,
        container: ContainerClient,
        *,
        lease_seconds: int = DEFAULT_LEASE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        clock: Clock = _utc_now,
    ) -> None:
        if not 15 <= lease_seconds <= 60:
            raise ValueError("blob leases last 15 to 60 seconds")
        self._container = container
        self._lease_seconds = lease_seconds
        self._monotonic = monotonic
        self._sleep = sleep
        self._clock = clock

    def _blob(self, feed: str) -> BlobClient:
        return self._container.get_blob_client(_lock_blob_name(feed))

    @contextmanager
    def hold(self, feed: str, *, wait_seconds: float = 0.0) -> Iterator[HeldLock]:
        """Lease the feed's lock blob for the run; while another run holds it, retry for ``wait_seconds``."""
        blob = self._blob(feed)
        give_up_at = self._monotonic() + wait_seconds
        first = True
        while True:
            try:
                lease = self._acquire(blob, create=first)
                break
            except _Taken as taken:
                remaining = give_up_at - self._monotonic()
                if remaining <= 0:
                    raise RunLockedError(
                        self._describe_holder(blob, feed, waited=wait_seconds)
                    ) from taken.__cause__
                self._sleep(min(BLOB_POLL_SECONDS, remaining))
                first = False
        since = self._clock()

        def record(renewed: datetime) -> None:
            metadata = _holder_record(since=since, renewed=renewed, lease_seconds=self._lease_seconds)
            blob.set_blob_metadata(metadata, lease=lease)

        try:
            record(since)
        except AzureError as err:
            logger.warning("could not record the lock holder: %s", scrub(str(err)))
        held = _BlobLease(lease, self._lease_seconds, self._monotonic, lambda: record(self._clock()))
        try:
            yield held
        finally:
            held.release()

    def _acquire(self, blob: BlobClient, *, create: bool) -> BlobLeaseClient:
        """One try at the lease (creating the lock blob first if ``create``); :class:`_Taken` if held."""
        try:
            try:
                if create:
                    blob.upload_blob(b"", overwrite=False)
            except (ResourceExistsError, HttpResponseError) as err:
                if getattr(err, "status_code", 409) not in (409, 412):
                    raise
            return blob.acquire_lease(lease_duration=self._lease_seconds, lease_id=str(uuid.uuid4()))
        except HttpResponseError as err:
            if err.status_code == 409:
                raise _Taken from err
            raise storage_error(f"cannot take the run lock {safe_url(blob.url)}", err) from err
        except AzureError as err:
            raise storage_error(f"cannot take the run lock {safe_url(blob.url)}", err) from err

    def _describe_holder(self, blob: BlobClient, feed: str, *, waited: float) -> str:
        try:
            metadata = blob.get_blob_properties().metadata or {}
        except AzureError:
            metadata = {}
        since = metadata.get("since", "an unknown time")
        holder = metadata.get("holder", "another process")
        did = "did nothing" if waited <= 0 else f"waited {waited:g} s for it and did nothing"
        return (
            f"another run holds the lock since {since} ({holder}, {safe_url(blob.url)}); this run {did}. "
            f"If that run was killed, its lease expires within {self._lease_seconds} s, or free it with "
            f"`python -m connector unlock{'' if feed == 'live' else f' --feed {feed}'}`"
        )

    def inspect(self, feed: str) -> LockState:
        """Whether the lock blob has a lease now, and what its holder recorded in the metadata."""
        blob = self._blob(feed)
        where = safe_url(blob.url)
        try:
            properties = blob.get_blob_properties()
        except ResourceNotFoundError:
            return LockState(where=where, held=False)
        except AzureError as err:
            raise storage_error(f"cannot read the run lock {where}", err) from err
        held = properties.lease.state == "leased"
        return _read_record(dict(properties.metadata or {}), where=where, held=held, version=properties.etag)

    def break_lock(self, feed: str, *, seen: LockState | None = None) -> str | None:
        """Break the lease at once, unless ``seen`` is given and the holder renewed since; return who held it.

        Low level: no check whether the holder is alive (``unlock`` decides that first;
        the crash harness breaks the lease of a run it has just killed).
        """
        blob = self._blob(feed)
        where = safe_url(blob.url)
        try:
            metadata = blob.get_blob_properties().metadata or {}
            if seen is None or seen.version is None:
                BlobLeaseClient(blob).break_lease(lease_break_period=0)
            else:
                BlobLeaseClient(blob).break_lease(
                    lease_break_period=0, etag=seen.version, match_condition=MatchConditions.IfNotModified
                )
        except HttpResponseError as err:
            if err.status_code == 412:
                raise RunLockedError(
                    f"the lock on {feed} ({where}) changed while unlock looked at it: its holder renewed it, "
                    "so its run is alive; nothing was broken"
                ) from err
            if err.status_code in (404, 409):  # no lock blob, or no lease on it
                return None
            raise storage_error(f"cannot break the run lock {where}", err) from err
        except AzureError as err:
            raise storage_error(f"cannot break the run lock {where}", err) from err
        holder = metadata.get("holder")
        return None if holder is None else f"{holder} since {metadata.get('since', '?')}"


def _try_flock(handle: IO[str]) -> bool:
    """Take an exclusive flock without blocking; False if another open file holds it."""
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class _FileLockHeld:
    def check(self) -> None:
        """An flock cannot be lost while the process lives."""


class FileRunLock:
    """Per-feed ``flock`` on ``<directory>/locks/<feed>.lock``."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._directory = Path(directory)
        self._monotonic = monotonic
        self._sleep = sleep

    @contextmanager
    def hold(self, feed: str, *, wait_seconds: float = 0.0) -> Iterator[HeldLock]:
        """Take the flock (trying again for ``wait_seconds`` while another run holds it); record the holder."""
        path = self._directory / _lock_blob_name(feed)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle: IO[str] = open(path, "a+")  # noqa: SIM115 - held for the whole run
        give_up_at = self._monotonic() + wait_seconds
        try:
            while not _try_flock(handle):
                remaining = give_up_at - self._monotonic()
                if remaining <= 0:
                    handle.seek(0)
                    try:
                        info = json.loads(handle.read() or "{}")
                    except json.JSONDecodeError:
                        info = {}
                    did = (
                        "did nothing"
                        if wait_seconds <= 0
                        else f"waited {wait_seconds:g} s for it and did nothing"
                    )
                    raise RunLockedError(
                        f"another run holds the lock since {info.get('since', 'an unknown time')} "
                        f"({info.get('holder', 'another process')}, {path}); this run {did}"
                    )
                self._sleep(min(FILE_POLL_SECONDS, remaining))
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(_holder_record(since=_utc_now(), renewed=None, lease_seconds=None)))
            handle.flush()
            yield _FileLockHeld()
        finally:
            handle.close()

    def inspect(self, feed: str) -> LockState:
        """Whether another process holds the flock now (tried without waiting), and who it recorded.

        An flock that can be taken is released again at once; only a run starting in
        that instant would find it held.
        """
        path = self._directory / _lock_blob_name(feed)
        try:
            handle: IO[str] = open(path)  # noqa: SIM115 - closed below, which frees a taken flock
        except FileNotFoundError:
            return LockState(where=str(path), held=False)
        with handle:
            if _try_flock(handle):
                return LockState(where=str(path), held=False)
            try:
                record = json.loads(handle.read() or "{}")
            except json.JSONDecodeError:
                record = {}
        return _read_record(record if isinstance(record, dict) else {}, where=str(path), held=True)

    def break_lock(self, feed: str, *, seen: LockState | None = None) -> str | None:
        """Nothing to break: the kernel frees an flock when its process dies."""
        del feed, seen
        return None
