"""When the Logs Ingestion API refuses a batch: a bad row, or a bad deployment? Pure.

A refused batch has three possible causes, and each needs a different answer:

* **not about the rows** (a refused token, a missing role, throttling, an outage):
  the run stops with that error, the rows stay uncommitted and the next run resends;
* **the deployment** (the table or the DCR stream does not declare a column, or
  declares another type): every row would be refused, so nothing is dead-lettered,
  the checkpoint does not move, and the run stops with a setting error that says to
  redeploy the table and DCR from the schema file;
* **a row** (a value the service will not take, a row over a size limit): the batch
  is split in halves until the refused rows stand alone (:class:`RowIsolation`);
  those are dead-lettered with the service's reason and the rest are stored.

A row is only blamed with evidence that the deployment takes rows: another row of
the same batch, or an earlier batch of the same run, was accepted. Without it (every
row refused, even alone) it is the deployment. Splitting is bounded: after
:data:`MAX_ALONE_WITHOUT_EVIDENCE` rows refused alone and none of the batch accepted,
it stops and calls it the deployment instead of sending every row by itself.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from connector.errors import ConnectorError, ErrorKind, SinkError
from connector.schema import SCHEMA_RESOURCE

# Statuses with which the service refuses the content of a request (not the caller or the moment).
ROW_REFUSAL_STATUSES = frozenset({400, 413})

# What a refusal says when the table or stream does not match the rows (the simulator's wording and
# the service's codes for an unknown stream or column).
_DEPLOYMENT_MISMATCH = re.compile(
    r"not declared|not defined|does not exist|unknown column|no such column|type mismatch|"
    r"needs an? |InvalidStream|schema",
    re.IGNORECASE,
)

MAX_ALONE_WITHOUT_EVIDENCE = 8


class Refusal(enum.Enum):
    """Why the service refused a batch, as far as its answer tells."""

    NOT_ROWS = "not_rows"
    DEPLOYMENT = "deployment"
    ROWS = "rows"


def classify_refusal(error: ConnectorError) -> Refusal:
    """Sort the error of a refused upload (see the module docstring)."""
    if not isinstance(error, SinkError) or error.status not in ROW_REFUSAL_STATUSES:
        return Refusal.NOT_ROWS
    if error.status == 400 and _DEPLOYMENT_MISMATCH.search(error.service_message):
        return Refusal.DEPLOYMENT
    return Refusal.ROWS


def deployment_refused(
    error: SinkError, *, rows: int, why: str, schema_file: str = SCHEMA_RESOURCE
) -> SinkError:
    """The setting error a run stops with when the table, the DCR or the endpoint, not a row, is at fault.

    ``schema_file`` is the table's schema in ``connector/data/``, to redeploy from.
    """
    if error.status == 413:
        fix = (
            "The service found even single rows over its request size limit, though the connector keeps "
            "requests under the documented 1 MB limit: check that INGESTION_ENDPOINT is the DCR's logs "
            "ingestion endpoint and not a proxy with a smaller limit"
        )
    else:
        fix = (
            "The table or the DCR stream does not match the rows the connector sends: redeploy the DCR and "
            f"the table from connector/data/{schema_file} (see the README's upgrade order)"
        )
    return SinkError(
        f"the Logs Ingestion API refused {why} ({rows} rows; it said: {error.service_message or error}). {fix}. "
        "Nothing was dead-lettered and the checkpoint did not move; the next run sends these rows again",
        rows_failed=rows,
        status=error.status,
        kind=ErrorKind.SETTING,
        service_message=error.service_message,
    )


@dataclass(slots=True)
class RowIsolation:
    """The bookkeeping of splitting one refused batch: rows refused alone, rows accepted."""

    accepted_before: int
    """Rows this run had stored before the batch: evidence that the deployment takes rows."""
    accepted: int = 0
    refused_alone: list[tuple[int, str]] = field(default_factory=list)
    """(position in the original batch, the service's reason) of each row refused on its own."""

    def note_accepted(self, rows: int) -> None:
        """Rows of the batch that went through."""
        self.accepted += rows

    def note_refused_alone(self, position: int, error: SinkError) -> None:
        """A row the service refused on its own."""
        reason = error.service_message or str(error)
        self.refused_alone.append(
            (position, f"the Logs Ingestion API refused this row ({error.status}): {reason}")
        )

    @property
    def gave_up(self) -> bool:
        """Too many rows refused alone and none of the batch taken: stop splitting, blame the deployment."""
        return self.accepted == 0 and len(self.refused_alone) >= MAX_ALONE_WITHOUT_EVIDENCE

    @property
    def deployment_takes_rows(self) -> bool:
        """True when some row of this batch or of an earlier batch of the run was accepted."""
        return self.accepted > 0 or self.accepted_before > 0
