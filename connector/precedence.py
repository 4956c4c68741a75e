"""One read of a slice yields one observation per row key, chosen by status precedence. Pure.

Graph can return the same (trace id, recipient) twice in one answer with different
statuses (say ``Pending`` on one page and ``Delivered`` on the next, while the message
moves on). Deciding each against the ledger would store both, and the next read of the
same answer would store both again as two more revisions, every run the overlap is
re-read. So within one read of a slice a key counts once, in its most advanced status:

    GettingStatus, Pending, None  <  Expanded  <  final statuses
    (Delivered, Failed, Quarantined, FilteredAsSpam, Recalled, and any status Graph adds)

Between two final statuses (rare) the one whose name sorts first wins, so the choice
does not depend on the order of the answer. Re-reading the same answer therefore
chooses the same observation and adds nothing, while a status that really changes
between reads (Pending, then Delivered, then Pending again) is still stored as
revisions by the ledger.

Rows are released for storing as soon as no later record of the read can supersede
them: with the answer newest first (as Graph returns it, and as
:class:`~connector.windows.SliceReading` checks), a key whose receive time is newer
than the oldest record read so far cannot appear again, because the observations of
one key carry one receive time. Once the order breaks, everything is held until the
read ends (at most the slice's page cap), so memory stays about one page either way.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Generic, NamedTuple, Protocol, TypeVar

_EARLY_STATUSES = {"GettingStatus": 0, "Pending": 0, "None": 0, "Expanded": 1}
FINAL = 2

_T = TypeVar("_T")


class Observed(Protocol):
    """What :class:`SliceObservations` reads of an observation: its key, receive time and status."""

    @property
    def key(self) -> str:
        """The row key (one per trace id and recipient)."""
        ...

    @property
    def received(self) -> datetime:
        """When the record was received (one per key)."""
        ...

    @property
    def status(self) -> str:
        """The record's normalised status."""
        ...


_O = TypeVar("_O", bound=Observed)


def status_precedence(status: str) -> int:
    """0 for a status still being worked out, 1 for ``Expanded``, 2 for a final (or new) status."""
    return _EARLY_STATUSES.get(status, FINAL)


def supersedes(status: str, other: str) -> bool:
    """True when ``status`` is more advanced than ``other`` (ties between finals: the first name wins)."""
    mine, theirs = status_precedence(status), status_precedence(other)
    if mine != theirs:
        return mine > theirs
    return status < other


class Observation(NamedTuple, Generic[_T]):
    """One key as the read saw it: its receive time, status, and what the caller keeps with it.

    A named tuple (immutable, and cheaper to build than a frozen dataclass: one per record read).
    """

    key: str
    received: datetime
    status: str
    item: _T


class SliceObservations(Generic[_O]):
    """The observations of one read of one slice, one per key, released once they are final.

    An observation is any immutable record with a ``key``, ``received`` and ``status``
    (an :class:`Observation`, or a caller's own named tuple that also carries what it
    needs later: one object per record read instead of an observation wrapping an item).
    """

    def __init__(self) -> None:
        self._held: dict[str, _O] = {}
        self.superseded = 0
        """Observations dropped because the same key came with a status as or more advanced."""

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, observation: _O) -> None:
        """Hold the observation, unless the read already holds its key in a status at least as advanced."""
        key = observation.key
        held = self._held.get(key)
        if held is not None:
            self.superseded += 1
            if not supersedes(observation.status, held.status):
                return
        self._held[key] = observation

    def release_newer_than(self, oldest_read: datetime) -> Iterator[_O]:
        """Release the keys received after ``oldest_read`` (a newest-first read cannot bring them again)."""
        settled = [key for key, held in self._held.items() if held.received > oldest_read]
        for key in settled:
            yield self._held.pop(key)

    def release_all(self) -> Iterator[_O]:
        """Release everything held (the read ended)."""
        held, self._held = self._held, {}
        yield from held.values()
