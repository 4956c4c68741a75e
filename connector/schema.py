"""The connector's table schemas, each loaded from its one data file.

``connector/data/EmailEvents_CL.json`` is the single source of truth for the
mail table's columns and types, ``connector/data/MessageTraceHealth_CL.json``
for the health table's (one summary row per run). The row mapping and the
health row, the local simulator's ingestion endpoint, the KQL checks and the
Bicep templates (``loadJsonContent``) all read those files, so a column can
never exist in one place and be missing in another.

Types use the Data Collection Rule stream vocabulary: ``string``, ``int``,
``long``, ``real``, ``boolean``, ``datetime``, ``dynamic``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

SCHEMA_RESOURCE = "EmailEvents_CL.json"
HEALTH_SCHEMA_RESOURCE = "MessageTraceHealth_CL.json"
DCR_COLUMN_TYPES = frozenset({"string", "int", "long", "real", "boolean", "datetime", "dynamic"})
RESERVED_COLUMN_NAMES = frozenset(
    {"_ResourceId", "id", "_SubscriptionId", "TenantId", "Type", "UniqueId", "Title"}
)
MAX_COLUMN_NAME_LENGTH = 45


@dataclass(frozen=True, slots=True)
class Column:
    """One table column: its name, DCR stream type and meaning."""

    name: str
    type: str
    description: str


@dataclass(frozen=True, slots=True)
class TableSchema:
    """The custom table, the DCR input stream that feeds it, and its columns."""

    table: str
    stream: str
    columns: tuple[Column, ...]

    @property
    def column_names(self) -> tuple[str, ...]:
        """Column names in schema order."""
        return tuple(column.name for column in self.columns)

    def type_of(self, name: str) -> str:
        """Return the DCR type of column ``name``; KeyError if it is not a column."""
        for column in self.columns:
            if column.name == name:
                return column.type
        raise KeyError(name)


def parse_table_schema(document: object) -> TableSchema:
    """Validate a parsed schema document and build a :class:`TableSchema`.

    Raises:
        ValueError: the document breaks a Log Analytics naming or typing rule.
    """
    if not isinstance(document, dict):
        raise ValueError("table schema must be a JSON object")
    table = document.get("table")
    stream = document.get("stream")
    raw_columns = document.get("columns")
    if not isinstance(table, str) or not table.endswith("_CL"):
        raise ValueError(f"table name must end in _CL, got {table!r}")
    if not isinstance(stream, str) or not stream.startswith("Custom-"):
        raise ValueError(f"stream name must start with Custom-, got {stream!r}")
    if not isinstance(raw_columns, list) or not raw_columns:
        raise ValueError("table schema needs a non-empty 'columns' list")
    columns: list[Column] = []
    seen: set[str] = set()
    for raw in raw_columns:
        if not isinstance(raw, dict):
            raise ValueError(f"column entry must be an object, got {raw!r}")
        name, col_type = raw.get("name"), raw.get("type")
        if not isinstance(name, str) or not name[:1].isalpha() or len(name) > MAX_COLUMN_NAME_LENGTH:
            raise ValueError(f"bad column name {name!r}")
        if not all(ch.isalnum() or ch == "_" for ch in name):
            raise ValueError(f"column name {name!r} may hold only letters, digits and '_'")
        if name in RESERVED_COLUMN_NAMES:
            raise ValueError(f"column name {name!r} is reserved by Log Analytics")
        if name.lower() in seen:
            raise ValueError(f"column {name!r} is declared twice")
        if col_type not in DCR_COLUMN_TYPES:
            raise ValueError(f"column {name!r} has unknown type {col_type!r}")
        seen.add(name.lower())
        columns.append(Column(name=name, type=col_type, description=str(raw.get("description", ""))))
    if "TimeGenerated" not in seen and "timegenerated" not in seen:
        raise ValueError("every Log Analytics table needs a TimeGenerated column")
    return TableSchema(table=table, stream=stream, columns=tuple(columns))


@lru_cache(maxsize=4)
def load_table_schema(resource: str = SCHEMA_RESOURCE) -> TableSchema:
    """Load and validate a packaged schema, ``EmailEvents_CL`` unless named (cached)."""
    text = resources.files("connector.data").joinpath(resource).read_text(encoding="utf-8")
    return parse_table_schema(json.loads(text))


def load_health_schema() -> TableSchema:
    """The ``MessageTraceHealth_CL`` schema: one summary row per run."""
    return load_table_schema(HEALTH_SCHEMA_RESOURCE)


DETAIL_SCHEMA_RESOURCE = "MessageTraceDetail_CL.json"


def load_detail_schema() -> TableSchema:
    """The ``MessageTraceDetail_CL`` schema: one row per event of an enriched message's journey."""
    return load_table_schema(DETAIL_SCHEMA_RESOURCE)
