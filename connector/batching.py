"""Group rows into upload batches that stay under the Logs Ingestion 1 MB limit. Pure.

Each batch becomes exactly one HTTP request, and each row is serialised exactly
once: :meth:`Batcher.add` encodes the row (:func:`encode_row`), sizes the batch by
those bytes, and keeps them; the sink sends :meth:`EncodedRows.body`, which is those
same bytes joined into a JSON array, gzipped once. Nothing re-serialises or
re-chunks the rows on the way (the SDK's list path, which measures and
``json.dumps`` every row again and cuts at 1 MiB, is not used), so one batch is one
accept-or-refuse unit and the checkpoint can follow it exactly.

The service's limit is 1 MB "both compressed and uncompressed"; gzip only shrinks
message trace JSON, so the uncompressed body is the binding one. The budget keeps a
margin below the 1,000,000 bytes for it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar, overload

from connector.errors import RecordError

SERVICE_MAX_REQUEST_BYTES = 1_000_000
DEFAULT_BATCH_BUDGET_BYTES = 990_000
"""Exact: the bytes sized are the bytes sent (one serialisation), so 1 % under the limit is margin enough."""
_ARRAY_BRACKETS = 2
_SEPARATOR = 1  # "," between array items

_Tag = TypeVar("_Tag")


def encode_row(row: Mapping[str, object]) -> bytes:
    """The bytes ``row`` is sent as: compact JSON, non-ASCII escaped (so the text is ASCII, hence UTF-8).

    Escaping keeps a lone surrogate (which the mapper replaces anyway) encodable, and
    the stdlib's ASCII encoder is its fastest path.
    """
    return _encode(row).encode("ascii")


# One encoder for every row: ``json.dumps`` with options builds a new JSONEncoder per call.
_encode = json.JSONEncoder(separators=(",", ":")).encode


def join_body(encoded: Iterable[bytes]) -> bytes:
    """The request body: encoded rows as one JSON array."""
    return b"[" + b",".join(encoded) + b"]"


def body_size(rows: Sequence[Mapping[str, object]]) -> int:
    """Exact size of the uncompressed request body for ``rows``."""
    return len(request_body(rows))


class EncodedRows(Sequence[Mapping[str, object]]):
    """Rows of one request with the bytes each was encoded to when it was batched (never re-encoded)."""

    __slots__ = ("_encoded", "_rows")

    def __init__(self, rows: Sequence[Mapping[str, object]], encoded: Sequence[bytes]) -> None:
        if len(rows) != len(encoded):
            raise ValueError(f"{len(rows)} rows but {len(encoded)} encodings")
        self._rows = rows
        self._encoded = encoded

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> Mapping[str, object]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Mapping[str, object]]: ...
    def __getitem__(self, index: int | slice) -> Mapping[str, object] | Sequence[Mapping[str, object]]:
        return self._rows[index]

    def __iter__(self) -> Iterator[Mapping[str, object]]:
        return iter(self._rows)

    def body(self) -> bytes:
        """The uncompressed request body, built from the batcher's bytes."""
        return join_body(self._encoded)


def request_body(rows: Sequence[Mapping[str, object]]) -> bytes:
    """The uncompressed request body for ``rows``: the batcher's bytes if it encoded them, else encoded now."""
    if isinstance(rows, EncodedRows):
        return rows.body()
    return join_body(encode_row(row) for row in rows)


@dataclass(slots=True)
class Batch(Generic[_Tag]):
    """Rows for one request, each with its encoded bytes and the caller's tag (the ledger decision behind it)."""

    rows: list[Mapping[str, object]] = field(default_factory=list)
    tags: list[_Tag] = field(default_factory=list)
    encoded: list[bytes] = field(default_factory=list)
    size_bytes: int = _ARRAY_BRACKETS
    """Exact size of :meth:`payload`'s body."""

    def __len__(self) -> int:
        return len(self.rows)

    def payload(self) -> EncodedRows:
        """What the sink sends: the rows with the bytes they were sized by."""
        return EncodedRows(self.rows, self.encoded)

    def select(self, indexes: Iterable[int]) -> Batch[_Tag]:
        """A batch of just the rows at ``indexes`` (in their order here), with the same bytes.

        Splitting a refused batch to find the rows the service refuses sends such sub-batches.
        """
        chosen = sorted(set(indexes))
        encoded = [self.encoded[index] for index in chosen]
        return Batch(
            rows=[self.rows[index] for index in chosen],
            tags=[self.tags[index] for index in chosen],
            encoded=encoded,
            size_bytes=_ARRAY_BRACKETS + sum(map(len, encoded)) + _SEPARATOR * max(len(encoded) - 1, 0),
        )


class Batcher(Generic[_Tag]):
    """Fills batches up to ``budget_bytes``; ``add`` hands back a batch when it is full."""

    def __init__(self, budget_bytes: int = DEFAULT_BATCH_BUDGET_BYTES) -> None:
        if not 0 < budget_bytes <= SERVICE_MAX_REQUEST_BYTES:
            raise ValueError(f"batch budget must be 1..{SERVICE_MAX_REQUEST_BYTES} bytes, got {budget_bytes}")
        self._budget = budget_bytes
        self._current: Batch[_Tag] = Batch()

    @property
    def pending(self) -> int:
        """Rows waiting in the batch being filled."""
        return len(self._current)

    def add(self, row: Mapping[str, object], tag: _Tag) -> Batch[_Tag] | None:
        """Add a row; return the previous batch if this row did not fit in it.

        Raises:
            RecordError: the row alone is larger than the budget.
        """
        encoded = encode_row(row)
        size = len(encoded)
        if _ARRAY_BRACKETS + size > self._budget:
            raise RecordError(
                f"row is {size} bytes, over the {self._budget}-byte request budget",
                str(row.get("MessageTraceId")),
            )
        current = self._current
        full: Batch[_Tag] | None = None
        if current.rows and current.size_bytes + _SEPARATOR + size > self._budget:
            full = current
            self._current = current = Batch()
        current.size_bytes += size if not current.rows else size + _SEPARATOR
        current.rows.append(row)
        current.tags.append(tag)
        current.encoded.append(encoded)
        return full

    def flush(self) -> Batch[_Tag] | None:
        """Return the partly filled batch, if any, and start a new one."""
        if not self._current.rows:
            return None
        full, self._current = self._current, Batch()
        return full
