"""The hunting queries and the workbook keep the shape Sentinel and Azure Workbooks load.

Why: neither is executed by the rest of the suite (``test_kql.py`` only parses their
KQL). A hunting query whose entity mapping names a column its result lacks loses that
entity without an error; a workbook query naming a parameter nobody defines shows
"{Name}" to the analyst, and a tab nobody shows leaves an empty page. Result columns come
from Microsoft's parser (Kusto.Language) through ``tests/kql.py``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests import kql

HUNTING = kql.SENTINEL / "Hunting Queries"
WORKBOOK = kql.SENTINEL / "Workbooks" / "MessageTrace.json"
HUNTING_QUERIES = sorted(HUNTING.glob("*.yaml"))
# Queries of the query audit (LAQueryLogs), not of the mail: they name the table as a search
# term and need no data connector (Azure-Sentinel's LAQueryLogs queries list none either).
AUDIT_QUERIES = {"WhoReadMessageTrace"}
MAIL_QUERIES = [path for path in HUNTING_QUERIES if path.stem not in AUDIT_QUERIES]
LOG_ANALYTICS = "microsoft.operationalinsights/workspaces"


def _load(path: Any) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def test_the_hunting_queries_the_issue_names_are_all_there():
    assert {path.stem for path in HUNTING_QUERIES} == {
        "MessageIdPivot",
        "UserOutboundMail",
        "MailFlowByDirectionAndStatus",
        "TopTalkers",
        "LargestMessages",
        "FirstSeenExternalSenderDomains",
        "BounceStorms",
        "WhoReadMessageTrace",
        "MessageJourney",
    }


@pytest.mark.parametrize("path", HUNTING_QUERIES, ids=[p.stem for p in HUNTING_QUERIES])
def test_hunting_query_has_the_azure_sentinel_fields(path):
    doc = _load(path)

    assert set(doc) <= {
        "id",
        "name",
        "description",
        "requiredDataConnectors",
        "tactics",
        "relevantTechniques",
        "query",
        "entityMappings",
        "version",
    }
    assert uuid.UUID(doc["id"]).version == 4
    assert doc["name"]
    assert doc["description"].strip()
    assert doc["requiredDataConnectors"] == (
        []
        if path.stem in AUDIT_QUERIES
        else [{"connectorId": "MessageTraceConnector", "dataTypes": ["EmailEvents_CL"]}]
    )
    assert doc["tactics"]
    assert all(re.fullmatch(r"[A-Z][A-Za-z]+", t) for t in doc["tactics"])
    assert doc["relevantTechniques"]
    assert all(re.fullmatch(r"T\d{4}", t) for t in doc["relevantTechniques"])
    assert doc["version"] == "1.0.0"


def test_hunting_query_ids_are_unique():
    ids = [_load(path)["id"] for path in HUNTING_QUERIES]

    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("path", MAIL_QUERIES, ids=[p.stem for p in MAIL_QUERIES])
def test_hunting_query_reads_message_trace_and_opens_with_commented_parameters(path):
    """Counting raw rows counts a message once per status revision; MessageTrace counts it once."""
    query = _load(path)["query"]
    first = query.splitlines()[0]

    assert "MessageTrace(" in query
    assert "EmailEvents_CL" not in query
    assert "TimeGenerated" not in query
    assert re.match(r"let \w+ = .+;\s*//", first), first


def test_who_read_message_trace_finds_every_way_to_read_the_table_in_the_query_audit():
    """A reader is found by the table's name or any parser that reads it, including the ASIM ones."""
    doc = _load(HUNTING / "WhoReadMessageTrace.yaml")
    query = doc["query"]
    parsers = {
        _load(path).get("FunctionName") or _load(path)["ParserName"]
        for path in (kql.SENTINEL / "Parsers").glob("*.yaml")
    }

    assert re.match(r"let \w+ = .+;\s*//", query.splitlines()[0])
    assert "\nLAQueryLogs\n" in query
    for name in {"EmailEvents_CL", "_Im_EmailEvent", "_ASim_EmailEvent", *parsers}:
        assert f'"{name}"' in query, name
    assert "enableQueryAudit" in doc["description"]
    assert "ResponseRowCount" in query


def test_hunting_entity_mappings_name_columns_of_the_result():
    docs = {path.stem: _load(path) for path in HUNTING_QUERIES}
    texts = [kql.KqlText(stem, doc["query"]) for stem, doc in docs.items()]
    columns = kql.analyze_columns(texts)

    missing = {
        (stem, mapping["columnName"])
        for stem, doc in docs.items()
        for entity in doc.get("entityMappings") or []
        for mapping in entity["fieldMappings"]
        if mapping["columnName"] not in columns[stem]
    }

    assert not missing


# ---- workbook ----------------------------------------------------------------------------


def _items(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        yield from _items(item.get("content", {}).get("items", []))


@pytest.fixture(scope="module")
def workbook() -> dict[str, Any]:
    loaded = json.loads(WORKBOOK.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _parameters(workbook: dict[str, Any]) -> set[str]:
    names = {
        p["name"] for i in _items(workbook["items"]) if i["type"] == 9 for p in i["content"]["parameters"]
    }
    tabs = {
        link["cellValue"]
        for i in _items(workbook["items"])
        if i["type"] == 11
        for link in i["content"]["links"]
        if link.get("linkTarget") == "parameter"
    }
    return names | tabs


def test_workbook_is_a_gallery_notebook_whose_queries_all_read_the_workspace(workbook):
    queries = [i["content"] for i in _items(workbook["items"]) if i["type"] == 3]

    assert workbook["version"] == "Notebook/1.0"
    assert queries
    assert all((q["queryType"], q["resourceType"]) == (0, LOG_ANALYTICS) for q in queries)


def test_workbook_item_names_are_unique(workbook):
    names = [i["name"] for i in _items(workbook["items"])]

    assert len(set(names)) == len(names)


def test_every_parameter_a_workbook_item_names_is_defined(workbook):
    defined = _parameters(workbook)
    used = {
        name.split(":", 1)[0]
        for item in _items(workbook["items"])
        if item["type"] in (1, 3)
        for name in re.findall(r"\{([A-Za-z_]\w*(?::\w+)?)\}", json.dumps(item["content"]))
    }
    shown_by = {
        i["conditionalVisibility"]["parameterName"]
        for i in _items(workbook["items"])
        if "conditionalVisibility" in i
    }

    assert used <= defined
    assert shown_by <= defined


def test_every_tab_shows_a_group_and_every_group_belongs_to_a_tab(workbook):
    tabs = {
        link["subTarget"]
        for i in _items(workbook["items"])
        if i["type"] == 11
        for link in i["content"]["links"]
        if link["cellValue"] == "selectedTab"
    }
    shown = {
        i["conditionalVisibility"]["value"]
        for i in _items(workbook["items"])
        if i.get("conditionalVisibility", {}).get("parameterName") == "selectedTab"
    }

    assert tabs == shown == {"flow", "talkers", "largest", "quarantine", "drilldown", "health"}


def test_workbook_queries_select_by_received_through_the_time_range(workbook):
    """A workbook time span would select by TimeGenerated, which is the arrival time for backfilled mail.

    The health tab reads MessageTraceHealth_CL, whose TimeGenerated is the run's end (never
    backfilled): it selects by TimeGenerated through the same time range, and reads no mail.
    """
    every = [i["content"] for i in _items(workbook["items"]) if i["type"] == 3]
    health = [q for q in every if q["query"].startswith("MessageTraceHealth_CL\n")]
    queries = [q for q in every if q not in health]

    assert len(health) == 4
    assert all(
        "| where TimeGenerated between (datetime({TimeRange:start}) .. datetime({TimeRange:end}))"
        in q["query"]
        and "MessageTrace(" not in q["query"]
        for q in health
    )

    assert all(
        "MessageTrace(starttime = datetime({TimeRange:start}), endtime = datetime({TimeRange:end})"
        in q["query"]
        for q in queries
    )
    assert not any("timeContextFromParameter" in q or "TimeGenerated" in q["query"] for q in queries)


def test_workbook_explains_received_and_revisions(workbook):
    texts = " ".join(i["content"]["json"] for i in _items(workbook["items"]) if i["type"] == 1)

    assert "Received" in texts
    assert "TimeGenerated" in texts
    assert "revision" in texts.lower()


def test_the_journey_query_and_the_drill_down_read_the_detail_table_each_row_once():
    """Both join MessageTraceDetail_CL to the message's trace ids and drop crash copies by RowId."""
    hunting = _load(HUNTING / "MessageJourney.yaml")["query"]
    workbook = json.loads(WORKBOOK.read_text(encoding="utf-8"))
    drill_down = next(
        item for item in workbook["items"] if item.get("name") == "group - message id drill-down"
    )
    (journey,) = [
        item["content"]["query"]
        for item in drill_down["content"]["items"]
        if item.get("name") == "query - message journey"
    ]

    for query in (hunting, journey):
        assert "MessageTraceDetail_CL" in query
        assert "summarize arg_min(Ingested, *) by RowId" in query
        assert "MessageTraceId in (" in query
    assert "join kind=leftouter Journeys on MessageTraceId, RecipientKey" in hunting
