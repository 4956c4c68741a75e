"""The dedup ledger: which (trace id, recipient) rows are already in the table, in which status.

Pure logic, no I/O. Log Analytics only appends, so the connector itself must know
what it already stored for as long as it may see the same record again, i.e. over
the overlap lookback it re-reads every run. The rules:

* key = (trace id, lower-cased recipient); one trace id covers several recipients;
* a record whose key is stored with the same status is a duplicate and is dropped;
* a known key with a new status is stored again as a *revision* (its number and the
  previous status go in the row), so the final status reaches Sentinel;
* decisions are *staged* until the batch holding them is accepted by the service,
  then *committed*; only committed entries are persisted with the checkpoint;
* committed entries older than the span that will be re-read are pruned.

Keys are stored as 128-bit BLAKE2b digests and receive times as epoch milliseconds:
the checkpoint stays compact, cheap to write after every batch, and holds no mail
addresses.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the Unix epoch (receive times carry at most millisecond precision)."""
    return int(moment.timestamp() * 1000)


def ledger_key(trace_id: str, recipient: str) -> str:
    """Digest of (trace id, lower-cased recipient): the identity of one row stream."""
    # surrogatepass: the same digest as plain UTF-8 for every encodable key, and no exception
    # for one that is not (the mapping refuses those; this keeps the ledger total anyway).
    material = f"{trace_id}\x1f{recipient.lower()}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(material, digest_size=16).hexdigest()


def key_state(trace_id: str, recipient: str) -> hashlib.blake2b:
    """The BLAKE2b state after (trace id, lower-cased recipient): hashed once per record read.

    Its digest is :func:`ledger_key`, and carried on by status and revision
    (:func:`row_id_after`) it gives :func:`row_id`, so a stored row lower-cases and
    hashes its identity once, not twice.
    """
    material = f"{trace_id}\x1f{recipient.lower()}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(material, digest_size=16)


def row_id_after(state: hashlib.blake2b, status: str, revision: int) -> str:
    """:func:`row_id` from the :func:`key_state` of its trace id and recipient (which stays unchanged)."""
    digest = state.copy()
    digest.update(f"\x1f{status}\x1f{revision}".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def row_id(trace_id: str, recipient: str, status: str, revision: int) -> str:
    """The identity of one stored row: digest of (trace id, lower-cased recipient, status, revision).

    Written in every row's ``RowId`` column, so a row sent twice (a crash between the
    service storing a batch and the connector hearing so) can always be recognised and
    dropped at query time, and so a batch in flight can be looked up in the workspace
    without the checkpoint holding a trace id (see :mod:`connector.intent`). ``status``
    is the normalised status the row carries.
    """
    material = f"{trace_id}\x1f{recipient.lower()}\x1f{status}\x1f{revision}".encode("utf-8", "surrogatepass")
    return hashlib.blake2b(material, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What the table holds for one key: receive time (epoch ms), last stored status, its revision."""

    received_ms: int
    status: str
    revision: int


@dataclass(frozen=True, slots=True)
class Decision:
    """A row to store: the entry it will commit and the status it supersedes (if any)."""

    key: str
    entry: LedgerEntry
    previous_status: str | None


@dataclass(frozen=True, slots=True)
class LedgerChange:
    """What one commit does to the ledger: decisions that became durable, and entries that age out.

    A commit describes its effect instead of handing back a new ledger, so the cost
    of a commit follows the rows it touches, not the size of the ledger.
    """

    committed: tuple[Decision, ...] = ()
    prune_before: datetime | None = None
    settles_intent: bool = False
    """``committed`` is exactly the entries of the intent the feed's last save recorded, in order:
    a journal line names that intent instead of listing every row again (:mod:`connector.checkpoint`)."""


# The slot setters of the two records :meth:`DedupLedger.decide` builds for every row it stores.
_new = object.__new__
_set_received_ms = vars(LedgerEntry)["received_ms"].__set__
_set_status = vars(LedgerEntry)["status"].__set__
_set_revision = vars(LedgerEntry)["revision"].__set__
_set_key = vars(Decision)["key"].__set__
_set_entry = vars(Decision)["entry"].__set__
_set_previous_status = vars(Decision)["previous_status"].__set__


class PackedEntries(Mapping[str, LedgerEntry]):
    """Committed ledger entries, each held as one int: a 500 k-entry ledger in ~80 MB, not ~110 MB.

    An entry packs as ``received_ms << 24 | status code << 16 | revision``, the status code
    indexing this ledger's table of statuses (a handful in practice). An entry that does
    not fit (a 257th status, a revision past 65,535, a time before 1970) is kept as its
    :class:`LedgerEntry`, so nothing is refused. Read-only to everyone but :class:`DedupLedger`.
    """

    __slots__ = ("_codes", "_statuses", "_values")

    def __init__(self, entries: Mapping[str, LedgerEntry] | None = None) -> None:
        self._values: dict[str, int | LedgerEntry] = {}
        self._statuses: list[str] = []
        self._codes: dict[str, int] = {}
        for key, entry in (entries or {}).items():
            self._put(key, entry)

    def _pack(self, entry: LedgerEntry) -> int | LedgerEntry:
        code = self._codes.get(entry.status)
        if code is None and len(self._statuses) < 256:
            code = self._codes[entry.status] = len(self._statuses)
            self._statuses.append(entry.status)
        if code is None or not 0 <= entry.revision < 1 << 16 or entry.received_ms < 0:
            return entry
        return entry.received_ms << 24 | code << 16 | entry.revision

    def _unpack(self, value: int | LedgerEntry) -> LedgerEntry:
        if type(value) is not int:
            return value  # type: ignore[return-value]  # kept unpacked: a LedgerEntry
        entry = _new(LedgerEntry)  # LedgerEntry(...) field by field: a snapshot unpacks every entry
        _set_received_ms(entry, value >> 24)
        _set_status(entry, self._statuses[(value >> 16) & 0xFF])
        _set_revision(entry, value & 0xFFFF)
        return entry

    def _put(self, key: str, entry: LedgerEntry) -> None:
        self._values[key] = self._pack(entry)

    def _remove_received_before(self, cutoff_ms: int) -> int:
        stale = [
            key
            for key, value in self._values.items()
            if (value.received_ms if isinstance(value, LedgerEntry) else value >> 24) < cutoff_ms
        ]
        for key in stale:
            del self._values[key]
        return len(stale)

    def __getitem__(self, key: str) -> LedgerEntry:
        return self._unpack(self._values[key])

    def get(self, key: str, default: LedgerEntry | None = None) -> LedgerEntry | None:  # type: ignore[override]
        """The entry of ``key`` (unpacked), or ``default``: without a KeyError on the hot path."""
        value = self._values.get(key)
        return default if value is None else self._unpack(value)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def items(self) -> Iterator[tuple[str, LedgerEntry]]:  # type: ignore[override]
        """(key, entry) pairs, unpacked one at a time."""
        unpack = self._unpack
        return ((key, unpack(value)) for key, value in self._values.items())

    def __repr__(self) -> str:
        return f"PackedEntries({dict(self.items())!r})"

    def packed(self) -> tuple[Iterator[tuple[str, int | LedgerEntry]], Sequence[str]]:
        """The entries as stored, and the status table their codes index: for a writer of every entry.

        A value is an ``int`` packed as ``received_ms << 24 | status code << 16 | revision``
        (the class docstring), or a :class:`LedgerEntry` that did not fit. Encoding a
        500 k-entry snapshot from these skips building an entry object per line.
        """
        return iter(self._values.items()), tuple(self._statuses)


class DedupLedger:
    """Committed entries (persisted) plus staged ones (in a batch not yet accepted)."""

    def __init__(self, entries: Mapping[str, LedgerEntry] | None = None) -> None:
        # Packed entries are taken over, not copied: a loaded ledger of 500 k entries is ~80 MB.
        self._committed = entries if isinstance(entries, PackedEntries) else PackedEntries(entries)
        self._staged: dict[str, LedgerEntry] = {}

    def __len__(self) -> int:
        return len(self._committed)

    @property
    def staged_count(self) -> int:
        """Keys decided but not yet committed."""
        return len(self._staged)

    @property
    def committed(self) -> Mapping[str, LedgerEntry]:
        """A read-only live view of the committed entries (what the checkpoint persists; no copy)."""
        return self._committed

    def adopted(self) -> PackedEntries:
        """The committed entries themselves (no copy), for a caller that hands the ledger on."""
        return self._committed

    def entries(self) -> dict[str, LedgerEntry]:
        """A copy of the committed entries."""
        return dict(self._committed.items())

    def decide(self, key: str, received: datetime, status: str) -> Decision | None:
        """Return the row to store for this observation, or ``None`` for a duplicate.

        The decision is staged, so the same key seen again before its batch is
        committed (Graph pages shift while new records arrive) is still a duplicate.
        """
        staged = self._staged
        known = staged.get(key)
        if known is None:
            packed = self._committed._values.get(key)  # noqa: SLF001 - the ledger owns its entries
            if packed is not None:
                known = self._committed._unpack(packed)  # noqa: SLF001
        # Built field by field through the slots (what the frozen dataclasses' __init__ does, at half the cost).
        if known is None:
            entry = _new(LedgerEntry)
            _set_received_ms(entry, int(received.timestamp() * 1000))  # epoch_ms
            _set_status(entry, status)
            _set_revision(entry, 0)
            previous = None
        elif known.status == status:
            return None
        else:
            entry = _new(LedgerEntry)
            _set_received_ms(entry, known.received_ms)
            _set_status(entry, status)
            _set_revision(entry, known.revision + 1)
            previous = known.status
        staged[key] = entry
        decision = _new(Decision)
        _set_key(decision, key)
        _set_entry(decision, entry)
        _set_previous_status(decision, previous)
        return decision

    def commit(self, decisions: Iterable[Decision]) -> None:
        """Record decisions whose rows the service accepted.

        One loop per batch on the packed values (this runs for every row sent): the stored
        revision is read off the packed int instead of unpacking an entry, an entry that
        packs is packed here, and the staged entry is matched by identity first (it is the
        decision's own entry unless the key was decided again since).
        """
        committed = self._committed
        values, codes, pack = committed._values, committed._codes, committed._pack  # noqa: SLF001 - its own
        staged = self._staged
        for decision in decisions:
            key, entry = decision.key, decision.entry
            revision = entry.revision
            current = values.get(key)
            if current is None or revision >= (
                current & 0xFFFF if type(current) is int else current.revision  # type: ignore[union-attr]
            ):
                code = codes.get(entry.status)
                received_ms = entry.received_ms
                values[key] = (
                    received_ms << 24 | code << 16 | revision
                    if code is not None and 0 <= revision < 1 << 16 and received_ms >= 0
                    else pack(entry)  # a new status, or an entry that does not pack
                )
            held = staged.get(key)
            if held is not None and (held is entry or held == entry):
                del staged[key]

    def forget_staged(self, decision: Decision) -> None:
        """Undo one staged decision whose row will not be sent (it was dead-lettered)."""
        if self._staged.get(decision.key) == decision.entry:
            del self._staged[decision.key]

    def discard_staged(self) -> None:
        """Forget decisions whose rows were not stored, so a re-run decides them again."""
        self._staged.clear()

    def apply(self, change: LedgerChange) -> None:
        """Carry out a commit: record its decisions, then drop what aged out."""
        self.commit(change.committed)
        if change.prune_before is not None:
            self.prune(change.prune_before)

    def prune(self, keep_from: datetime) -> int:
        """Drop committed entries received before ``keep_from``; return how many went."""
        return self._committed._remove_received_before(epoch_ms(keep_from))  # noqa: SLF001
