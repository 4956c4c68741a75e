"""The intent: the record of a batch in flight, and how one a killed run left behind is resolved.

Before a batch is sent, its rows' ledger keys are saved with the checkpoint
(:func:`intent_for`); the save after the upload clears it. A run that finds one on
load cannot know whether the service took that batch, so it resolves it before any
new work (:class:`IntentResolver`):

* with workspace verification (a :class:`~connector.ports.WorkspaceVerifier`), it
  waits until the batch is older than the ingestion latency (or defers the whole
  run if that wait does not fit its budget), asks which rows arrived, and commits
  those; the rest are sent again when their slice is read again;
* without it, every row is sent again and counted as a possible duplicate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from connector.ledger import Decision
from connector.ports import Clock, Deadline, WorkspaceVerifier
from connector.state import Committed, IntentEntry, PendingBatch

logger = logging.getLogger(__name__)

# The workspace query looks this far around the batch: backfilled rows get their
# arrival time as TimeGenerated, and clocks differ.
VERIFY_MARGIN = timedelta(hours=1)


def intent_for(
    decisions: Sequence[Decision], rows: Sequence[Mapping[str, object]], created: datetime
) -> PendingBatch:
    """The record saved before a batch is sent: each row's ledger decision and ``RowId``."""
    # IntentEntry(...) without its generated __new__'s Python frame: one per row sent.
    return PendingBatch(
        created=created,
        entries=tuple(
            [
                _tuple_new(
                    IntentEntry,
                    (
                        decision.key,
                        (entry := decision.entry).received_ms,
                        entry.status,
                        entry.revision,
                        row_id if type(row_id := row["RowId"]) is str else str(row_id),
                        None,
                    ),
                )
                for decision, row in zip(decisions, rows, strict=True)
            ]
        ),
    )


_tuple_new = tuple.__new__


@dataclass(frozen=True, slots=True)
class Resolution:
    """What became of an unconfirmed batch (``deferred``: not yet, the next run tries)."""

    deferred: bool = False
    found: tuple[Decision, ...] = ()
    resent: int = 0
    possible_duplicates: int = 0

    def committed(self) -> Committed:
        """The commit that settles the batch: the rows found stored, the rest sent again."""
        return Committed(accepted=self.found, possible_duplicates=self.possible_duplicates)


class IntentResolver:
    """Settles an unconfirmed batch, with or without workspace verification."""

    def __init__(
        self,
        verifier: WorkspaceVerifier | None,
        *,
        clock: Clock,
        deadline: Deadline,
        verify_delay: timedelta,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._verifier = verifier
        self._clock = clock
        self._deadline = deadline
        self._verify_delay = verify_delay
        self._sleep = sleep

    def resolve(self, pending: PendingBatch) -> Resolution:
        """Decide which rows of ``pending`` are stored; may wait out the ingestion latency first.

        Raises:
            VerificationError: the workspace could not be read (the batch stays recorded).
        """
        rows = len(pending.entries)
        if self._verifier is None:
            logger.warning(
                "an earlier run stopped while sending %d rows and workspace verification is off "
                "(WORKSPACE_ID unset): sending them again; up to %d rows may be duplicated",
                rows,
                rows,
            )
            return Resolution(possible_duplicates=rows)
        wait = (self._verify_delay - (self._clock() - pending.created)).total_seconds()
        if wait > 0:
            if wait > self._deadline.remaining() / 2:
                logger.info("unresolved batch is %.0f s too young to verify; deferring this run", wait)
                return Resolution(deferred=True)
            logger.info("waiting %.0f s for ingestion latency before verifying the unresolved batch", wait)
            self._sleep(wait)
        now = self._clock()
        oldest = datetime.fromtimestamp(min(entry.received_ms for entry in pending.entries) / 1000, tz=UTC)
        since, until = min(oldest, pending.created) - VERIFY_MARGIN, now + VERIFY_MARGIN
        by_row_id = [entry for entry in pending.entries if entry.legacy_trace_id is None]
        legacy = [entry for entry in pending.entries if entry.legacy_trace_id is not None]
        found_entries: list[IntentEntry] = []
        if by_row_id:
            stored = self._verifier.rows_stored(
                [entry.row_id for entry in by_row_id], since=since, until=until
            )
            found_entries += [entry for entry in by_row_id if entry.row_id in stored]
        if legacy:
            present = self._verifier.legacy_rows_present(
                sorted({str(entry.legacy_trace_id) for entry in legacy}), since=since, until=until
            )
            found_entries += [
                entry for entry in legacy if (entry.key, entry.status, entry.revision) in present
            ]
        found = tuple(entry.decision() for entry in found_entries)
        logger.warning(
            "resolved the batch an earlier run left unconfirmed: %d of %d rows are in the workspace, "
            "%d will be sent again",
            len(found),
            rows,
            rows - len(found),
        )
        return Resolution(found=found, resent=rows - len(found))
