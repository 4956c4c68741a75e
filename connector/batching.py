"""Group rows into upload batches that stay under the Logs Ingestion 1 MB limit. Pure.

Each batch becomes exactly one HTTP request: the size is measured the way the
request body is built (``json.dumps`` of the list with default separators and
ASCII escaping, as ``azure-monitor-ingestion`` does before gzip), and the budget
keeps a margin below the service's 1,000,000-byte limit. The SDK's own chunking
(at 1 MiB) then never splits a batch, so one batch is one accept-or-refuse unit
and the checkpoint can follow it exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from connector.errors import RecordError

SERVICE_MAX_REQUEST_BYTES = 1_000_000
DEFAULT_BATCH_BUDGET_BYTES = 950_000
_ARRAY_BRACKETS = 2
_SEPARATOR = 2  # ", " between array items

_Tag = TypeVar("_Tag")


def row_size(row: Mapping[str, object]) -> int:
    """Bytes ``row`` adds to the request body (without its separator)."""
    return len(json.dumps(row).encode("utf-8"))


def body_size(rows: list[Mapping[str, object]]) -> int:
    """Exact size of ``json.dumps(rows)``, the uncompressed request body."""
    if not rows:
        return _ARRAY_BRACKETS
    return _ARRAY_BRACKETS + sum(row_size(row) for row in rows) + _SEPARATOR * (len(rows) - 1)


@dataclass(slots=True)
class Batch(Generic[_Tag]):
    """Rows for one request, each with the caller's tag (the ledger decision behind it)."""

    rows: list[Mapping[str, object]] = field(default_factory=list)
    tags: list[_Tag] = field(default_factory=list)
    size_bytes: int = _ARRAY_BRACKETS

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, indexes: Iterable[int]) -> Batch[_Tag]:
        """A batch of just the rows at ``indexes`` (in their order here), sized like a request body.

        Splitting a refused batch to find the rows the service refuses sends such sub-batches.
        """
        chosen = sorted(set(indexes))
        rows = [self.rows[index] for index in chosen]
        return Batch(rows=rows, tags=[self.tags[index] for index in chosen], size_bytes=body_size(rows))


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
        size = row_size(row)
        if _ARRAY_BRACKETS + size > self._budget:
            raise RecordError(
                f"row is {size} bytes, over the {self._budget}-byte request budget",
                str(row.get("MessageTraceId")),
            )
        extra = size if not self._current.rows else size + _SEPARATOR
        full: Batch[_Tag] | None = None
        if self._current.rows and self._current.size_bytes + extra > self._budget:
            full = self._current
            self._current = Batch()
            extra = size
        self._current.rows.append(row)
        self._current.tags.append(tag)
        self._current.size_bytes += extra
        return full

    def flush(self) -> Batch[_Tag] | None:
        """Return the partly filled batch, if any, and start a new one."""
        if not self._current.rows:
            return None
        full, self._current = self._current, Batch()
        return full
