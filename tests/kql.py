"""Every KQL text the repository holds, and Microsoft's parser run over them.

Why: KQL lives in places no other test executes (README examples, the alert rule in
Bicep, the DCR transform, Sentinel content, the verification queries the connector
builds), so a renamed column or a typo would only show when someone runs it in Azure.
:func:`collect` finds the texts, :func:`analyze` hands them to ``scripts/kql_check.mjs``
(Kusto.Language, npm ``@kusto/language-service-next``) with the tables they query.

Where KQL is found (add a new place here, not a hand-written list of queries):

* Markdown (every ``*.md``): fenced ``kusto``/``kql`` blocks, and inline code that
  starts with a known table name followed by ``|``;
* Bicep (every ``infra/**/*.bicep``): ``query:`` and ``transformKql:`` values (string
  literals, ``'''`` blocks, or a parameter such as ``tableName``; interpolations are
  filled from :data:`BICEP_VALUES`);
* ``*.kql`` files anywhere, and ``query:`` fields of YAML under ``infra/sentinel/``;
* Log Analytics queries of workbooks (``infra/sentinel/Workbooks/*.json``), their
  ``{Parameter}`` references filled from :data:`WORKBOOK_VALUES`;
* the queries of data connector definitions (``infra/sentinel/Data Connectors/*.json``);
* the queries ``connector/workspace.py`` builds, with odd trace ids.

Tables come from every ``connector/data/*.json`` schema (through
:func:`connector.schema.parse_table_schema`), plus the standard columns Log Analytics
adds to every table and the built-in tables the docs query (:data:`STANDARD_TABLES`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from connector.schema import TableSchema, parse_table_schema
from connector.windows import Window
from connector.workspace import hourly_rows_query, piece_rows_query, presence_query, stored_query

ROOT = Path(__file__).resolve().parents[1]
CHECKER = ROOT / "scripts" / "kql_check.mjs"
SCHEMA_DIR = ROOT / "connector" / "data"
SENTINEL = ROOT / "infra" / "sentinel"
_SKIPPED_DIRS = frozenset({".git", "node_modules", ".venv", ".venv-checkov", ".state", ".demo"})

# Columns Log Analytics adds to every table, custom ones included
# (https://learn.microsoft.com/azure/azure-monitor/logs/log-standard-columns).
STANDARD_COLUMNS: Mapping[str, str] = {
    "TenantId": "string",
    "Type": "string",
    "_ResourceId": "string",
    "_SubscriptionId": "string",
    "_ItemId": "string",
    "_IsBillable": "string",
    "_BilledSize": "real",
    "_TimeReceived": "datetime",
}

# Built-in tables the docs query, with the columns of their Learn reference page.
STANDARD_TABLES: Mapping[str, Mapping[str, str]] = {
    # https://learn.microsoft.com/azure/azure-monitor/reference/tables/laquerylogs
    "LAQueryLogs": {
        "TimeGenerated": "datetime",
        "AADClientId": "string",
        "AADEmail": "string",
        "AADObjectId": "string",
        "AADTenantId": "string",
        "CorrelationId": "string",
        "IsBillableQuery": "bool",
        "QueryText": "string",
        "QueryTimeRangeEnd": "datetime",
        "QueryTimeRangeStart": "datetime",
        "RequestClientApp": "string",
        "RequestContext": "dynamic",
        "RequestTarget": "string",
        "ResponseCode": "int",
        "ResponseDurationMs": "real",
        "ResponseRowCount": "int",
        "ScannedGB": "real",
        "SourceSystem": "string",
        **STANDARD_COLUMNS,
    },
    # Defender XDR's EmailEvents as the Microsoft Defender XDR connector streams it to a
    # Sentinel workspace (the columns the README's join uses; learn
    # defender-xdr/advanced-hunting-emailevents-table, plus TimeGenerated in Log Analytics).
    "EmailEvents": {
        "TimeGenerated": "datetime",
        "Timestamp": "datetime",
        "NetworkMessageId": "string",
        "InternetMessageId": "string",
        "SenderMailFromAddress": "string",
        "SenderFromAddress": "string",
        "RecipientEmailAddress": "string",
        "Subject": "string",
        "EmailDirection": "string",
        "DeliveryAction": "string",
        "DeliveryLocation": "string",
        "LatestDeliveryLocation": "string",
        "ThreatTypes": "string",
        **STANDARD_COLUMNS,
    },
}

# Trace and row ids the verification queries must quote exactly: quotes, backslashes,
# line breaks and other control characters, Unicode separators, non-BMP characters.
ODD_IDS = (
    "0a1b2c3d-0000-4000-8000-000000000001",
    'quote"inside',
    "single'quote",
    "back\\slash\\",
    "cr\rlf\ncrlf\r\n",
    "tab\tnul\x00del\x7f",
    "line\u2028para\u2029",
    "emoji \U0001f600 ü",
    "",
)


def schemas() -> list[TableSchema]:
    """Every table schema file, so a second table is validated against as soon as it exists."""
    return [
        parse_table_schema(json.loads(path.read_text(encoding="utf-8")))
        for path in sorted(SCHEMA_DIR.glob("*.json"))
    ]


def connector_schema() -> TableSchema:
    """The table the connector writes: what the alert, the DCR and verification read."""
    (schema,) = [s for s in schemas() if s.table == "EmailEvents_CL"]
    return schema


def tables() -> dict[str, dict[str, str]]:
    """Table → column → type, for every table a KQL text may read."""
    found: dict[str, dict[str, str]] = {name: dict(cols) for name, cols in STANDARD_TABLES.items()}
    for schema in schemas():
        found[schema.table] = {
            **STANDARD_COLUMNS,
            **{column.name: column.type for column in schema.columns},
        }
    return found


# Bicep parameters a KQL value may name or interpolate, with what the deployment passes.
BICEP_VALUES: Mapping[str, str] = {"tableName": "EmailEvents_CL"}


@dataclass(frozen=True)
class KqlText:
    """One KQL text: where it came from (the test id) and, for a DCR transform, its input."""

    name: str
    query: str
    local_tables: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


def _files(pattern: str, under: Path = ROOT) -> Iterator[Path]:
    if not under.is_dir():
        return
    for path in sorted(under.rglob(pattern)):
        if not _SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts):
            yield path


def _where(path: Path, text: str, offset: int) -> str:
    return f"{path.relative_to(ROOT).as_posix()}:{text.count(chr(10), 0, offset) + 1}"


# ---- Markdown ---------------------------------------------------------------------------

_FENCE = re.compile(r"^([ \t]*)```[ \t]*(\S*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.M | re.S)
# A code span: a run of backticks, text, the same run (CommonMark), on one line here.
_INLINE = re.compile(r"(?<!`)(`+)(?!`)([^\n]+?)(?<!`)\1(?!`)")


def markdown_texts(path: Path, known_tables: set[str]) -> Iterator[KqlText]:
    """Fenced kusto/kql blocks, and inline code starting with ``<known table> |``."""
    text = path.read_text(encoding="utf-8")
    prose = text
    for fence in _FENCE.finditer(text):
        indent, language, body = fence.group(1), fence.group(2).lower(), fence.group(3)
        prose = prose.replace(fence.group(0), "\n" * fence.group(0).count("\n"), 1)
        if language in {"kusto", "kql"}:
            lines = [line.removeprefix(indent) for line in body.splitlines()]
            query = "\n".join(lines)
            yield KqlText(f"{_where(path, text, fence.start())} {language} block", query)
    for span in _INLINE.finditer(prose):
        code = span.group(2).strip()
        first = re.match(r"([A-Za-z_]\w*)\s*\|", code)
        if first and first.group(1) in known_tables:
            column = span.start() - prose.rfind("\n", 0, span.start())
            yield KqlText(f"{_where(path, prose, span.start())}:{column} inline", code)


# ---- Bicep ------------------------------------------------------------------------------

_BICEP_KEY = re.compile(r"^[ \t]*(query|transformKql)[ \t]*:[ \t]*", re.M)
_BICEP_ESCAPES = {"\\": "\\", "'": "'", "n": "\n", "r": "\r", "t": "\t", "$": "$"}


def _bicep_string(source: str, start: int, values: Mapping[str, str]) -> str:
    """The value of the single-quoted Bicep string at ``source[start]`` (a quote)."""
    out: list[str] = []
    i = start + 1
    while i < len(source):
        char = source[i]
        if char == "'":
            return "".join(out)
        if char == "\\":
            escaped = source[i + 1]
            if escaped == "u":
                close = source.index("}", i)
                out.append(chr(int(source[i + 3 : close], 16)))
                i = close + 1
                continue
            out.append(_BICEP_ESCAPES[escaped])
            i += 2
            continue
        if source.startswith("${", i):
            close = source.index("}", i)
            out.append(_bicep_identifier(source[i + 2 : close].strip(), values))
            i = close + 1
            continue
        out.append(char)
        i += 1
    raise ValueError("unterminated Bicep string")


def _bicep_identifier(name: str, values: Mapping[str, str]) -> str:
    if name not in values:
        raise ValueError(
            f"KQL in Bicep uses {name!r}: add what the deployment passes for it to "
            "tests/kql.py BICEP_VALUES (or a var holding a string literal)"
        )
    return values[name]


def _bicep_value(source: str, start: int, values: Mapping[str, str]) -> str:
    if source.startswith("'''", start):
        # Multi-line strings take everything literally (no escapes, no interpolation);
        # a newline right after the opening quotes is not part of the value.
        body = source[start + 3 : source.index("'''", start + 3)]
        return body.removeprefix("\r\n").removeprefix("\n")
    if source.startswith("'", start):
        return _bicep_string(source, start, values)
    identifier = re.match(r"[A-Za-z_]\w*", source[start:])
    if identifier and not re.match(r"[ \t]*[.(\[?]", source[start + identifier.end() :]):
        return _bicep_identifier(identifier.group(0), values)
    line = source[start:].split("\n", 1)[0]
    raise ValueError(f"KQL in Bicep given as an expression tests/kql.py cannot read: {line}")


# A query read from Sentinel content loaded with loadYamlContent: rule.query, query.query,
# messageTraceParser.FunctionQuery, vimParser.ParserQuery.
_SENTINEL_FIELD = re.compile(r"[A-Za-z_]\w*\.(?:query|FunctionQuery|ParserQuery)[ \t]*(?:\r?\n|$)")


def bicep_texts(path: Path, values: Mapping[str, str], source_table: Mapping[str, str]) -> Iterator[KqlText]:
    """``query:`` and ``transformKql:`` values of a Bicep file, with its string vars resolved."""
    source = path.read_text(encoding="utf-8")
    local = dict(values)
    for var in re.finditer(r"^var[ \t]+(\w+)[ \t]*=[ \t]*(?=')", source, re.M):
        try:
            local[var.group(1)] = _bicep_value(source, var.end(), local)
        except ValueError:
            continue  # a var that is not a plain string is not KQL; fail only if a query uses it
    loads_sentinel_content = "loadYamlContent('../sentinel/" in source
    for key in _BICEP_KEY.finditer(source):
        name = f"{_where(path, source, key.start())} {key.group(1)}"
        if loads_sentinel_content and _SENTINEL_FIELD.match(source, key.end()):
            # The query field of a file loaded from infra/sentinel/: checked there by yaml_texts.
            continue
        try:
            query = _bicep_value(source, key.end(), local)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from err
        extra = {"source": dict(source_table)} if key.group(1) == "transformKql" else {}
        yield KqlText(name, query, extra)


# ---- YAML (Sentinel content) ------------------------------------------------------------


@dataclass(frozen=True)
class Parser:
    """A saved function from a parser YAML: what the workspace will hold under ``name``.

    Both Azure-Sentinel parser formats are read: a solution parser (``FunctionAlias``,
    ``FunctionParams``, ``FunctionQuery``) and an ASIM parser (``ParserName``,
    ``ParserParams``, ``ParserQuery``).
    """

    name: str
    parameters: tuple[tuple[str, str, str], ...]  # (name, type, default)
    body: str
    source: str

    def parameter_list(self) -> str:
        """``(name:type=default, ...)``: what the saved search's functionParameters say."""
        return "(" + ", ".join(f"{n}:{t}={d}" for n, t, d in self.parameters) + ")"

    def body_query(self) -> str:
        """The body as a query of its own, its parameters declared, so errors inside it show.

        Kusto.Language reports nothing inside a function body at a call site, so the
        body must be analyzed on its own.
        """
        declared = ", ".join(f"{n}:{t} = {d}" for n, t, d in self.parameters)
        header = f"declare query_parameters({declared});\n" if declared else ""
        return header + self.body


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ValueError(f"{path.relative_to(ROOT).as_posix()} is not valid YAML: {err}") from err


def parser_of(path: Path) -> Parser | None:
    """The parser a Sentinel YAML file defines, or None when it defines none."""
    doc = _load_yaml(path)
    if not isinstance(doc, dict):
        return None
    where = path.relative_to(ROOT).as_posix()
    if "FunctionQuery" in doc:
        name, params, body = doc.get("FunctionAlias"), doc.get("FunctionParams") or [], doc["FunctionQuery"]
    elif "ParserQuery" in doc:
        name, params, body = doc.get("ParserName"), doc.get("ParserParams") or [], doc["ParserQuery"]
    else:
        return None
    if not isinstance(name, str) or not isinstance(body, str):
        raise ValueError(f"{where}: a parser needs a name (FunctionAlias/ParserName) and a query")
    parameters = tuple((str(p["Name"]), str(p["Type"]), kql_default(p["Type"], p["Default"])) for p in params)
    return Parser(name, parameters, body.rstrip("\n"), where)


def kql_default(kind: str, value: Any) -> str:
    """A YAML ``Default`` as KQL: ``false`` for a YAML boolean, ``'*'`` for the string ``*``.

    Azure-Sentinel writes ``Default: false`` and ``Default: '*'``; its ARM templates
    carry them as ``pack:bool=false`` and ``eventresult:string='*'``.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if kind == "string" and not (len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""):
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return text


def _queries_in(node: Any, at: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{at}.{key}" if at else str(key)
            if key == "query":
                if not isinstance(value, str):
                    raise ValueError(f"{here} is not a string")
                yield here, value
            else:
                yield from _queries_in(value, here)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _queries_in(item, f"{at}[{index}]")


def yaml_texts(path: Path) -> Iterator[KqlText]:
    """Every ``query`` field at any depth, and a parser's body with its parameters declared."""
    where = path.relative_to(ROOT).as_posix()
    for at, query in _queries_in(_load_yaml(path), ""):
        yield KqlText(f"{where} {at}", query.rstrip("\n"))
    parser = parser_of(path)
    if parser is not None:
        yield KqlText(f"{where} parser {parser.name}", parser.body_query())


def parsers() -> list[Parser]:
    """Every parser the Sentinel content deploys: declared as functions to every query."""
    found = [
        p for pattern in ("*.yaml", "*.yml") for path in _files(pattern, SENTINEL) if (p := parser_of(path))
    ]
    names = [p.name for p in found]
    if len(set(names)) != len(names):
        raise ValueError(f"two parsers share a name: {sorted(names)}")
    return found


def watchlist_columns() -> dict[str, str]:
    """Columns ``_GetWatchlist`` returns for the shipped watchlists (every CSV header, as string).

    Sentinel's ``_GetWatchlist(alias)`` returns _DTItemId, LastUpdatedTimeUTC, SearchKey,
    WatchlistItem and one column per CSV column
    (https://learn.microsoft.com/azure/sentinel/watchlists-queries).
    """
    columns = {
        "_DTItemId": "string",
        "LastUpdatedTimeUTC": "datetime",
        "SearchKey": "string",
        "WatchlistItem": "dynamic",
    }
    for path in _files("*.csv", SENTINEL / "Watchlists"):
        header = path.read_text(encoding="utf-8").splitlines()[:1]
        for name in header[0].split(",") if header else []:
            columns.setdefault(name.strip(), "string")
    return columns


def functions() -> list[dict[str, str]]:
    """Functions every query may call: the shipped parsers and Sentinel's _GetWatchlist."""
    declared = [
        {"name": p.name, "parameters": p.parameter_list(), "body": "{\n" + p.body + "\n}"} for p in parsers()
    ]
    watchlist = ", ".join(f"{name}:{kind}" for name, kind in watchlist_columns().items())
    declared.append(
        {
            "name": "_GetWatchlist",
            "parameters": "(watchlistAlias:string)",
            "body": f"{{ datatable({watchlist})[] }}",
        }
    )
    return declared


# ---- Workbooks (Azure Workbooks gallery JSON) -------------------------------------------

# What the portal writes in place of each {Parameter} a workbook query names, in the form
# it arrives in the query text: a time range's start and end as ISO 8601 text (so queries
# wrap them as datetime({TimeRange:start})), its grain as a timespan, a multi-select
# dropdown as its quoted values joined by commas, a text box as typed. A parameter missing
# here is refused, so a query with an unchecked substitution cannot pass.
WORKBOOK_VALUES: Mapping[str, str] = {
    "TimeRange:start": "2026-11-01T00:00:00.000Z",
    "TimeRange:end": "2026-11-08T00:00:00.000Z",
    "TimeRange:grain": "1h",
    "Directions": "'Inbound','Outbound','Internal','External'",
    "TopN": "10",
    "MessageId": "<id@example.com>",
}
_WORKBOOK_PARAMETER = re.compile(r"\{([A-Za-z_]\w*(?::\w+)?)\}")
_LOG_ANALYTICS = "microsoft.operationalinsights/workspaces"


def _workbook_items(items: Any) -> Iterator[dict[str, Any]]:
    """Every item, groups (type 12) opened, in document order."""
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            yield item
            content = item.get("content")
            if isinstance(content, dict):
                yield from _workbook_items(content.get("items"))


def workbook_query(query: str, values: Mapping[str, str], where: str) -> str:
    """``query`` with each ``{Parameter}`` replaced by its representative value."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise ValueError(
                f"{where} uses workbook parameter {{{name}}}: add a representative value for it "
                "to tests/kql.py WORKBOOK_VALUES"
            )
        return values[name]

    return _WORKBOOK_PARAMETER.sub(value, query)


def workbook_texts(path: Path, values: Mapping[str, str] = WORKBOOK_VALUES) -> Iterator[KqlText]:
    """The KQL of every Log Analytics query in a workbook (query items and parameter queries).

    A query of any other kind (Resource Graph, ARM, merge...) is refused rather than
    skipped, so a workbook cannot grow a query this module does not check.
    """
    where = path.relative_to(ROOT).as_posix()
    try:
        workbook = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{where} is not valid JSON: {err}") from err
    for item in _workbook_items(workbook.get("items") if isinstance(workbook, dict) else None):
        content = item.get("content")
        if not isinstance(content, dict):
            continue
        queries = [(str(item.get("name", "")), content)] if item.get("type") == 3 else []
        if item.get("type") == 9:
            queries += [
                (f"{item.get('name', '')} {p.get('name', '')}", p)
                for p in content.get("parameters") or []
                if isinstance(p, dict) and "query" in p
            ]
        for name, holder in queries:
            here = f"{where} {name}"
            if holder.get("queryType") != 0 or holder.get("resourceType") != _LOG_ANALYTICS:
                raise ValueError(
                    f"{here}: only Log Analytics queries (queryType 0, {_LOG_ANALYTICS}) are checked"
                )
            yield KqlText(here, workbook_query(str(holder["query"]), values, here))


# ---- Data connector definitions (Codeless Connector Framework) --------------------------

# The connectorUiConfig fields Sentinel runs as KQL (learn data-connector-ui-definitions-
# reference): graphQueries[].baseQuery, sampleQueries[].query,
# dataTypes[].lastDataReceivedQuery, and connectivityCriteria[].value[] of an
# IsConnectedQuery criterion. Found at any depth, so a query moved elsewhere is still read.
_CONNECTOR_QUERY_KEYS = frozenset({"baseQuery", "query", "lastDataReceivedQuery"})
# Criteria that carry no query (an API polling connector's active connection).
_CONNECTOR_CRITERIA_WITHOUT_QUERY = frozenset({"hasdataconnectors"})


def _connector_queries(node: Any, at: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{at}.{key}" if at else str(key)
            if key in _CONNECTOR_QUERY_KEYS:
                if not isinstance(value, str):
                    raise ValueError(f"{here} is not a string")
                yield here, value
            elif key == "connectivityCriteria":
                yield from _connectivity_queries(value, here)
            else:
                yield from _connector_queries(value, here)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _connector_queries(item, f"{at}[{index}]")


def _connectivity_queries(criteria: Any, at: str) -> Iterator[tuple[str, str]]:
    for index, criterion in enumerate(criteria if isinstance(criteria, list) else [criteria]):
        here = f"{at}[{index}]"
        kind = criterion.get("type") if isinstance(criterion, dict) else None
        if not isinstance(kind, str):
            raise ValueError(f"{here} has no type")
        if kind.lower() in _CONNECTOR_CRITERIA_WITHOUT_QUERY and "value" not in criterion:
            continue
        if kind.lower() != "isconnectedquery":
            raise ValueError(f"{here}: criterion type {kind!r} is not one tests/kql.py reads")
        values = criterion.get("value")
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise ValueError(f"{here}.value is not a list of query strings")
        for number, query in enumerate(values):
            yield f"{here}.value[{number}]", query


def connector_texts(path: Path) -> Iterator[KqlText]:
    """Every query of a data connector definition (Azure-Sentinel ``Data Connectors/*.json``).

    A query field that is not text, a connectivity criterion of another kind, or a
    ``{{placeholder}}`` (``graphQueriesTableName``) is refused rather than skipped, so the
    card cannot hold a query this module does not check.
    """
    where = path.relative_to(ROOT).as_posix()
    try:
        definition = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{where} is not valid JSON: {err}") from err
    for at, query in _connector_queries(definition, ""):
        if "{{" in query:
            raise ValueError(f"{where} {at} uses a {{{{placeholder}}}}: write the table name instead")
        yield KqlText(f"{where} {at}", query.rstrip("\n"))


# ---- all of them ------------------------------------------------------------------------


def verification_texts(table: str) -> Iterator[KqlText]:
    """The queries workspace verification sends, built with odd ids."""
    yield KqlText("connector/workspace.py stored_query", stored_query(table, ODD_IDS))
    yield KqlText(
        "connector/workspace.py stored_query (shared table)",
        stored_query(table, ODD_IDS, "72f988bf-86f1-41af-91ab-2d7cd011db47"),
    )
    yield KqlText("connector/workspace.py presence_query", presence_query(table, ODD_IDS))
    piece = Window(datetime(2026, 11, 20, 10, 30, tzinfo=UTC), datetime(2026, 11, 20, 11, tzinfo=UTC))
    yield KqlText("connector/workspace.py piece_rows_query", piece_rows_query(table, piece))
    yield KqlText(
        "connector/workspace.py piece_rows_query (shared table)",
        piece_rows_query(table, piece, "72f988bf-86f1-41af-91ab-2d7cd011db47"),
    )
    yield KqlText("connector/workspace.py hourly_rows_query", hourly_rows_query(table, piece))
    yield KqlText(
        "connector/workspace.py hourly_rows_query (shared table)",
        hourly_rows_query(table, piece, "72f988bf-86f1-41af-91ab-2d7cd011db47"),
    )


def enrichment_texts() -> Iterator[KqlText]:
    """The queries ``enrich`` sends (``connector/enrich_store.py``), built with odd ids."""
    from datetime import UTC, datetime

    from connector.enrich_store import enriched_pairs_query, recipients_query, status_query
    from connector.schema import load_detail_schema

    detail, mail, tenant = (
        load_detail_schema().table,
        connector_schema().table,
        "72f988bf-86f1-41af-91ab-2d7cd011db47",
    )
    start, end = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 8, 12, 30, 15, 250000, tzinfo=UTC)
    where = "connector/enrich_store.py"
    yield KqlText(f"{where} enriched_pairs_query", enriched_pairs_query(detail, ODD_IDS))
    yield KqlText(
        f"{where} enriched_pairs_query (shared table)", enriched_pairs_query(detail, ODD_IDS, tenant)
    )
    yield KqlText(f"{where} recipients_query", recipients_query(mail, ODD_IDS, tenant))
    yield KqlText(f"{where} status_query", status_query(mail, ("Quarantined", "Failed"), start, end))
    yield KqlText(f"{where} status_query (shared table)", status_query(mail, ("Failed",), start, end, tenant))
    yield KqlText(f"{where} stored_query (detail table)", stored_query(detail, ODD_IDS, tenant))


def collect() -> list[KqlText]:
    """Every KQL text in the repository, each named by where it was found."""
    known = tables()
    # The DCR's transformKql reads the connector's input stream, which has the table's columns.
    stream_source = {column.name: column.type for column in connector_schema().columns}
    texts: list[KqlText] = []
    for path in _files("*.md"):
        texts.extend(markdown_texts(path, set(known)))
    for path in _files("*.bicep", ROOT / "infra"):
        texts.extend(bicep_texts(path, BICEP_VALUES, stream_source))
    for path in _files("*.kql"):
        texts.append(KqlText(path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8")))
    for pattern in ("*.yaml", "*.yml"):
        for path in _files(pattern, SENTINEL):
            texts.extend(yaml_texts(path))
    for path in _files("*.json", SENTINEL / "Workbooks"):
        texts.extend(workbook_texts(path))
    for path in _files("*.json", SENTINEL / "Data Connectors"):
        texts.extend(connector_texts(path))
    texts.extend(verification_texts(connector_schema().table))
    texts.extend(enrichment_texts())
    names = [text.name for text in texts]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise ValueError(f"two KQL texts share a name: {sorted(duplicates)}")
    return texts


def _run(texts: list[KqlText]) -> dict[str, dict[str, Any]]:
    """One run of ``scripts/kql_check.mjs``: name → {"diagnostics": [...], "columns": {...}}."""
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed: the KQL checks need it (see scripts/setup.sh)")
    if not (ROOT / "node_modules" / "@kusto" / "language-service-next").is_dir():
        raise RuntimeError("@kusto/language-service-next is missing: run bash scripts/setup.sh")
    request = {
        "tables": tables(),
        "functions": functions(),
        "queries": [
            {"name": t.name, "query": t.query, **({"tables": t.local_tables} if t.local_tables else {})}
            for t in texts
        ],
    }
    done = subprocess.run(
        [node, str(CHECKER)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"kql_check.mjs failed ({done.returncode}): {done.stderr.strip()}")
    return {result["name"]: result for result in json.loads(done.stdout)}


def analyze(texts: list[KqlText]) -> dict[str, list[dict[str, Any]]]:
    """Name → Kusto.Language diagnostics, from one run of ``scripts/kql_check.mjs``."""
    return {name: found["diagnostics"] for name, found in _run(texts).items()}


def analyze_columns(texts: list[KqlText]) -> dict[str, dict[str, str]]:
    """Name → the result's column → type, as Kusto.Language infers it (tabular results only)."""
    return {name: found["columns"] for name, found in _run(texts).items()}


def describe(text: KqlText, diagnostics: list[dict[str, Any]]) -> str:
    """The failure message: where the query is, each diagnostic at its line and column."""
    lines = [f"KQL from {text.name}:", text.query, ""]
    for d in diagnostics:
        before = text.query[: d["offset"]]
        line, column = before.count("\n") + 1, d["offset"] - (before.rfind("\n") + 1) + 1
        snippet = text.query[d["offset"] : d["offset"] + max(d["length"], 1)]
        lines.append(f"  {d['severity']} {d['code']} at {line}:{column} ({snippet!r}): {d['message']}")
    return "\n".join(lines)
