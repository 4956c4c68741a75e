"""Every KQL text in the repository parses and analyzes cleanly with Microsoft's parser.

Why: README examples, the alert rule, the DCR transform and the verification queries are
run by Azure, never by the rest of the suite; Kusto.Language (the parser behind the
portal's editor) finds syntax errors and unknown tables, columns and functions without a
workspace. Where texts are found and which tables they read: ``tests/kql.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests import kql

TEXTS = kql.collect()
# Unknown table, column/variable, function: errors today, refused whatever their severity.
UNKNOWN_NAME_CODES = frozenset({"KS142", "KS204", "KS211"})

PROBES = [
    kql.KqlText("probe: unknown column", "EmailEvents_CL | where NoSuchColumn == 1"),
    kql.KqlText("probe: syntax error", "EmailEvents_CL | where"),
    kql.KqlText("probe: unknown function", "EmailEvents_CL | extend x = no_such_function(Status)"),
]


@pytest.fixture(scope="session")
def diagnostics() -> dict[str, list[dict[str, Any]]]:
    """One node run for every text and probe of the session."""
    return kql.analyze([*TEXTS, *PROBES])


@pytest.mark.parametrize("text", TEXTS, ids=[text.name for text in TEXTS])
def test_kql_text_has_no_error_and_no_unknown_name(text, diagnostics):
    found = diagnostics[text.name]
    bad = [d for d in found if d["severity"] == "Error" or d["code"] in UNKNOWN_NAME_CODES]

    assert not bad, kql.describe(text, bad)


def test_collector_finds_the_queries_that_must_be_checked():
    """Guards against a collector bug making the suite pass on nothing."""
    by_source: dict[str, list[str]] = {}
    for text in TEXTS:
        by_source.setdefault(text.name.split(":", 1)[0].split(" ", 1)[0], []).append(text.query)

    assert any("arg_max(StatusRevision, *)" in q for q in by_source["README.md"])
    assert any("ingestion_time()" in q for q in by_source["infra/README.md"])
    assert any("LAQueryLogs" in q for q in by_source["infra/README.md"])
    assert by_source["infra/modules/alert.bicep"]
    assert all("EmailEvents_CL" in q for q in by_source["infra/modules/alert.bicep"])
    assert by_source["infra/modules/dcr.bicep"]
    # the content module deploys queries read from infra/sentinel/, checked in those files
    assert "infra/modules/sentinel-content.bicep" not in by_source
    rules = [t.name for t in TEXTS if t.name.startswith("infra/sentinel/Analytic Rules/")]
    assert len(rules) >= 6
    verification = {t.name for t in TEXTS if t.name.startswith("connector/workspace.py")}
    assert verification == {
        "connector/workspace.py stored_query",
        "connector/workspace.py stored_query (shared table)",
        "connector/workspace.py presence_query",
        "connector/workspace.py piece_rows_query",
        "connector/workspace.py piece_rows_query (shared table)",
        "connector/workspace.py hourly_rows_query",
        "connector/workspace.py hourly_rows_query (shared table)",
    }


def test_unknown_column_is_reported(diagnostics):
    (found,) = diagnostics["probe: unknown column"]

    assert (found["severity"], found["code"]) == ("Error", "KS142")
    assert "NoSuchColumn" in found["message"]


def test_syntax_error_is_reported(diagnostics):
    found = diagnostics["probe: syntax error"]

    assert [(d["severity"], d["code"]) for d in found] == [("Error", "KS006")]


def test_unknown_function_is_reported(diagnostics):
    (found,) = diagnostics["probe: unknown function"]

    assert (found["severity"], found["code"]) == ("Error", "KS211")


def test_markdown_collector_reads_fenced_indented_and_inline_kql(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(kql, "ROOT", tmp_path)
    page = tmp_path / "page.md"
    page.write_text(
        "Count with `T_CL | count` or `once | count`; ``T_CL | where A == `x` `` and `` `T_CL | y` ``.\n\n"
        "- step\n\n  ```kql\n  T_CL\n  | take 1\n  ```\n\n"
        "```bash\necho `T_CL | nope`\n```\n"
    )

    found = {t.name: t.query for t in kql.markdown_texts(page, {"T_CL"})}

    assert found == {
        "page.md:5 kql block": "T_CL\n| take 1",
        "page.md:1:12 inline": "T_CL | count",
        "page.md:1:46 inline": "T_CL | where A == `x`",
    }


def test_bicep_collector_resolves_parameters_interpolation_and_escapes(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(kql, "ROOT", tmp_path)
    module = tmp_path / "rule.bicep"
    module.write_text(
        "var rule = '${tableName} | where Status == \\'Failed\\''\n"
        "resource a 'x' = {\n  properties: {\n    query: rule\n    transformKql: 'source'\n"
        "    query: '''\nT_CL\n| take 1'''\n  }\n}\n"
    )

    found = [
        (t.name, t.query, dict(t.local_tables))
        for t in kql.bicep_texts(module, {"tableName": "T_CL"}, {"A": "string"})
    ]

    assert found == [
        ("rule.bicep:4 query", "T_CL | where Status == 'Failed'", {}),
        ("rule.bicep:5 transformKql", "source", {"source": {"A": "string"}}),
        ("rule.bicep:6 query", "T_CL\n| take 1", {}),
    ]


def test_bicep_collector_refuses_a_query_it_cannot_read(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(kql, "ROOT", tmp_path)
    module = tmp_path / "rule.bicep"
    module.write_text("resource a 'x' = {\n  properties: {\n    query: concat(a, b)\n  }\n}\n")

    with pytest.raises(ValueError, match="rule.bicep:3 query"):
        list(kql.bicep_texts(module, {}, {}))


def test_yaml_collector_reads_every_query_field_at_any_depth(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(kql, "ROOT", tmp_path)
    rule = tmp_path / "rule.yaml"
    rule.write_text(
        "id: 1\nquery: |\n  T_CL\n  | where A == 'x'\n\n  | take 1\n\nseverity: Low\n"
        "queries:\n  - name: one\n    query: 'T_CL | take 2'\n  - name: two\n    query: >-\n      T_CL\n      | take 3\n"
    )

    found = {t.name: t.query for t in kql.yaml_texts(rule)}

    assert found == {
        "rule.yaml query": "T_CL\n| where A == 'x'\n\n| take 1",
        "rule.yaml queries[0].query": "T_CL | take 2",
        "rule.yaml queries[1].query": "T_CL | take 3",
    }


def test_yaml_collector_refuses_a_query_that_is_not_text(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(kql, "ROOT", tmp_path)
    rule = tmp_path / "rule.yaml"
    rule.write_text("query:\n  - T_CL\n")

    with pytest.raises(ValueError, match="query is not a string"):
        list(kql.yaml_texts(rule))


def test_parsers_of_both_sentinel_formats_become_functions_with_their_defaults(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(kql, "ROOT", tmp_path)
    solution = tmp_path / "Solution.yaml"
    solution.write_text(
        "FunctionName: Sol\nFunctionAlias: Sol\nFunctionParams:\n"
        "  - {Name: since, Type: datetime, Default: datetime(null)}\n"
        "FunctionQuery: |\n  T_CL | where isnull(since)\n"
    )
    asim = tmp_path / "vimX.yaml"
    asim.write_text(
        "ParserName: vimX\nParserParams:\n  - {Name: eventresult, Type: string, Default: '*'}\n"
        "  - {Name: pack, Type: bool, Default: false}\n  - {Name: quoted, Type: string, Default: \"'a'\"}\n"
        "ParserQuery: |\n  T_CL\n"
    )

    sol, vim = kql.parser_of(solution), kql.parser_of(asim)

    assert sol is not None
    assert vim is not None
    assert (sol.name, sol.parameter_list()) == ("Sol", "(since:datetime=datetime(null))")
    assert (vim.name, vim.parameter_list()) == (
        "vimX",
        "(eventresult:string='*', pack:bool=false, quoted:string='a')",
    )
    declared = "declare query_parameters(eventresult:string = '*', pack:bool = false, quoted:string = 'a');"
    assert vim.body_query() == declared + "\nT_CL"
    assert [t.name for t in kql.yaml_texts(asim)] == ["vimX.yaml parser vimX"]


def test_a_query_calling_a_parser_is_checked_against_the_parser_result():
    probes = [
        kql.KqlText(
            "probe: parser column", "MessageTrace(starttime = ago(1d)) | project IngestedAt, Status, RowId"
        ),
        kql.KqlText("probe: parser unknown column", "MessageTrace() | where NoSuchColumn == 1"),
        kql.KqlText("probe: parser unknown parameter", "MessageTrace(nosuch = 1)"),
        kql.KqlText(
            "probe: watchlist",
            "_GetWatchlist('LookalikeDomains') | project SearchKey, LookalikeDomain, OriginalDomain",
        ),
    ]

    found = kql.analyze(probes)

    assert found["probe: parser column"] == []
    assert [d["code"] for d in found["probe: parser unknown column"]] == ["KS142"]
    assert [d["severity"] for d in found["probe: parser unknown parameter"]] == ["Error"]
    assert found["probe: watchlist"] == []


# ---- workbooks ---------------------------------------------------------------------------


def _workbook(tmp_path: Path, items: list[dict[str, Any]]) -> Path:
    path = tmp_path / "book.json"
    path.write_text(json.dumps({"version": "Notebook/1.0", "items": items}))
    return path


LOGS = {"queryType": 0, "resourceType": "microsoft.operationalinsights/workspaces"}


def test_workbook_collector_reads_queries_in_groups_and_parameters_with_values_filled(
    tmp_path: Path, monkeypatch
):
    monkeypatch.setattr(kql, "ROOT", tmp_path)
    path = _workbook(
        tmp_path,
        [
            {"type": 1, "content": {"json": "{NotAQuery}"}, "name": "text"},
            {
                "type": 9,
                "content": {
                    "parameters": [{"name": "P", "query": "T_CL | distinct A", **LOGS}, {"name": "Q"}]
                },
                "name": "params",
            },
            {
                "type": 12,
                "content": {
                    "items": [
                        {
                            "type": 3,
                            "content": {
                                "query": "T_CL | where B > datetime({TimeRange:start}) | take {N}",
                                **LOGS,
                            },
                            "name": "inner",
                        }
                    ]
                },
                "name": "group",
            },
        ],
    )

    found = {
        t.name: t.query
        for t in kql.workbook_texts(path, {"TimeRange:start": "2026-11-01T00:00:00Z", "N": "5"})
    }

    assert found == {
        "book.json params P": "T_CL | distinct A",
        "book.json inner": "T_CL | where B > datetime(2026-11-01T00:00:00Z) | take 5",
    }


def test_workbook_collector_refuses_a_parameter_without_a_representative_value(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(kql, "ROOT", tmp_path)
    path = _workbook(
        tmp_path, [{"type": 3, "content": {"query": "T_CL | take {Unknown}", **LOGS}, "name": "q"}]
    )

    with pytest.raises(ValueError, match=r"book.json q uses workbook parameter \{Unknown\}"):
        list(kql.workbook_texts(path, {}))


def test_workbook_collector_refuses_a_query_that_is_not_log_analytics(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(kql, "ROOT", tmp_path)
    graph = {"queryType": 1, "resourceType": "microsoft.resourcegraph/resources"}
    path = _workbook(tmp_path, [{"type": 3, "content": {"query": "Resources", **graph}, "name": "q"}])

    with pytest.raises(ValueError, match="book.json q: only Log Analytics queries"):
        list(kql.workbook_texts(path, {}))


def test_collector_checks_every_workbook_query_of_the_sentinel_content():
    workbook = [t for t in TEXTS if t.name.startswith("infra/sentinel/Workbooks/MessageTrace.json ")]

    assert len(workbook) >= 14
    # Parameters substituted; mail through the parser, the health tab from its own table.
    assert all(
        ("MessageTrace(" in t.query or t.query.startswith("MessageTraceHealth_CL"))
        and "{TimeRange" not in t.query
        for t in workbook
    )


def _write_connector(tmp_path: Path, ui: dict[str, Any]) -> Path:
    path = tmp_path / "Data Connectors" / "Card.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"kind": "Customizable", "properties": {"connectorUiConfig": ui}}))
    return path


def test_connector_collector_reads_chart_samples_last_data_and_connectivity_queries(
    tmp_path: Path, monkeypatch
):
    monkeypatch.setattr(kql, "ROOT", tmp_path)
    path = _write_connector(
        tmp_path,
        {
            "title": "query: not a query key here",
            "graphQueries": [{"metricName": "Rows", "legend": "T_CL", "baseQuery": "T_CL"}],
            "sampleQueries": [{"description": "d", "query": "T_CL\n| take 1\n"}],
            "dataTypes": [
                {"name": "T_CL", "lastDataReceivedQuery": "T_CL | summarize Time = max(TimeGenerated)"}
            ],
            "connectivityCriteria": [
                {"type": "HasDataConnectors"},
                {"type": "IsConnectedQuery", "value": ["T_CL | take 2", "T_CL | take 3"]},
            ],
        },
    )

    found = {t.name: t.query for t in kql.connector_texts(path)}

    ui = "Data Connectors/Card.json properties.connectorUiConfig"
    assert found == {
        f"{ui}.graphQueries[0].baseQuery": "T_CL",
        f"{ui}.sampleQueries[0].query": "T_CL\n| take 1",
        f"{ui}.dataTypes[0].lastDataReceivedQuery": "T_CL | summarize Time = max(TimeGenerated)",
        f"{ui}.connectivityCriteria[1].value[0]": "T_CL | take 2",
        f"{ui}.connectivityCriteria[1].value[1]": "T_CL | take 3",
    }


@pytest.mark.parametrize(
    ("ui", "refusal"),
    [
        ({"sampleQueries": [{"query": ["T_CL"]}]}, "sampleQueries\\[0\\].query is not a string"),
        (
            {"connectivityCriteria": [{"type": "IsConnectedQuery", "value": "T_CL"}]},
            "not a list of query strings",
        ),
        (
            {"connectivityCriteria": [{"type": "SomethingNew", "value": ["T_CL"]}]},
            "'SomethingNew' is not one",
        ),
        ({"connectivityCriteria": [{"value": ["T_CL"]}]}, "has no type"),
        ({"dataTypes": [{"lastDataReceivedQuery": "{{graphQueriesTableName}} | take 1"}]}, "placeholder"),
    ],
    ids=["query not text", "value not a list", "unknown criterion", "criterion without type", "placeholder"],
)
def test_connector_collector_refuses_a_query_field_it_cannot_read(tmp_path: Path, monkeypatch, ui, refusal):
    monkeypatch.setattr(kql, "ROOT", tmp_path)
    path = _write_connector(tmp_path, ui)

    with pytest.raises(ValueError, match=refusal):
        list(kql.connector_texts(path))


def test_collector_checks_every_query_of_the_data_connector_card():
    prefix = "infra/sentinel/Data Connectors/MessageTraceConnector.json properties.connectorUiConfig."
    fields = {t.name.removeprefix(prefix).split("[", 1)[0] for t in TEXTS if t.name.startswith(prefix)}

    assert fields == {"graphQueries", "sampleQueries", "dataTypes", "connectivityCriteria"}


def test_collector_checks_every_query_enrich_sends():
    """The queries of ``connector/enrich_store.py`` are among the checked texts (with odd ids and a tenant)."""
    names = {t.name for t in TEXTS if t.name.startswith("connector/enrich_store.py")}

    assert names == {
        "connector/enrich_store.py enriched_pairs_query",
        "connector/enrich_store.py enriched_pairs_query (shared table)",
        "connector/enrich_store.py recipients_query",
        "connector/enrich_store.py status_query",
        "connector/enrich_store.py status_query (shared table)",
        "connector/enrich_store.py stored_query (detail table)",
    }
