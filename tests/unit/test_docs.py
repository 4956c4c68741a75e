"""The README documents what the code does: the settings it reads, the table it writes."""

import re
from pathlib import Path

from connector.schema import load_table_schema

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _section(heading: str) -> str:
    return README.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_readme_settings_table_matches_the_settings_the_code_reads():
    code = (ROOT / "connector" / "settings.py").read_text()
    read_by_code = set(re.findall(r'"([A-Z][A-Z0-9_]{3,})"', code))
    table = _section("Settings")
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]{3,})`", table))

    assert documented == read_by_code


def test_readme_column_table_lists_exactly_the_schema_columns_and_types():
    documented = {}
    for names, column_type in re.findall(
        r"^\| ([A-Z][\w, ]*) \| (\w+) \|", _section("Table `EmailEvents_CL`"), re.M
    ):
        for name in names.split(", "):
            documented[name] = column_type

    assert documented == {column.name: column.type for column in load_table_schema().columns}


def test_readme_latest_status_query_works_on_rows_and_tables_without_row_id():
    (query,) = re.findall(r"```kusto\n(.*?)```", _section("Table `EmailEvents_CL`"), re.S)

    # RowId read through column_ifexists: the query runs before the table has the column;
    # rows without one are kept, not grouped under the empty RowId.
    assert 'column_ifexists("RowId", "")' in query
    assert "isempty(RowId)" in query
    assert "by RowId" in query
    assert "tolower(RecipientAddress)" in query


def test_readme_detail_column_table_lists_exactly_the_detail_schema_columns_and_types():
    from connector.schema import load_detail_schema

    documented = dict(
        re.findall(
            r"^\| ([A-Z]\w*) \| (\w+) \|",
            _section("Enrichment: message journeys into `MessageTraceDetail_CL`"),
            re.M,
        )
    )

    assert documented == {column.name: column.type for column in load_detail_schema().columns}
