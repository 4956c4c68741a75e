"""Table columns == DCR stream columns == the connector's rows, all from one schema file."""

import json

from connector.mapping import ROW_COLUMNS
from connector.schema import DCR_COLUMN_TYPES, load_table_schema
from tests.infra.bicep import (
    HEALTH_SCHEMA_FILE,
    MAIN,
    SCHEMA_FILE,
    bicep_files,
    body,
    evaluate,
    leaves,
    module,
    nodes,
    parse,
)

SCHEMA = json.loads(SCHEMA_FILE.read_text())
HEALTH_SCHEMA = json.loads(HEALTH_SCHEMA_FILE.read_text())
DETAIL_SCHEMA = json.loads((SCHEMA_FILE.parent / "MessageTraceDetail_CL.json").read_text())
TABLE_COLUMN_TYPES = {"string", "int", "long", "real", "boolean", "dateTime", "dynamic"}


def _table_columns() -> list[dict]:
    table = module("table")
    return evaluate(table["variables"]["tableColumns"]["value"], {"schema": SCHEMA})


def _stream_columns() -> list[dict]:
    dcr = module("dcr")
    return evaluate(dcr["variables"]["streamColumns"]["value"], {"schema": SCHEMA})


def test_main_loads_the_connector_schema_file_with_loadjsoncontent():
    function = parse(MAIN)["variables"]["schema"]["value"]["function"]
    assert function["type"] == "load_json_content"
    assert (MAIN.parent / function["parameters"]["file_path"]).resolve() == SCHEMA_FILE.resolve()
    assert function["parameters"]["json_path"] is None


def test_schema_is_loaded_once_and_passed_to_table_and_dcr():
    loads = [path.name for path in bicep_files() if "EmailEvents_CL.json')" in path.read_text()]
    assert loads == ["main.bicep"]
    modules = parse(MAIN)["modules"]
    assert body(modules["table"])["params"]["schema"] == "schema"
    assert body(modules["dcr"])["params"]["schema"] == "schema"


def test_no_template_holds_a_hand_written_column_list():
    names = set(load_table_schema().column_names)
    for path in bicep_files():
        parsed = parse(path)
        written = {leaf for leaf in leaves(parsed) if isinstance(leaf, str)} & names
        assert not written, f"{path.name} spells out column names {sorted(written)}"
        for node in nodes(parsed):
            if isinstance(node, dict) and "columns" in node:
                assert isinstance(node["columns"], str), f"{path.name}: literal columns {node['columns']!r}"


def test_table_columns_equal_stream_columns_equal_connector_rows():
    table = _table_columns()
    stream = _stream_columns()
    schema = load_table_schema()
    assert [c["name"] for c in table] == [c["name"] for c in stream] == list(schema.column_names)
    assert set(schema.column_names) == ROW_COLUMNS


def test_column_types_map_datetime_to_table_datetime():
    table = {c["name"]: c["type"] for c in _table_columns()}
    stream = {c["name"]: c["type"] for c in _stream_columns()}
    schema = load_table_schema()
    for column in schema.columns:
        assert stream[column.name] == column.type
        assert stream[column.name] in DCR_COLUMN_TYPES
        assert table[column.name] == ("dateTime" if column.type == "datetime" else column.type)
        assert table[column.name] in TABLE_COLUMN_TYPES
    assert table["TimeGenerated"] == "dateTime"
    assert stream["TimeGenerated"] == "datetime"


def test_row_id_reaches_the_table_and_the_dcr_stream_from_the_schema_file():
    described = {c["name"]: c["description"] for c in SCHEMA["columns"]}
    table = {c["name"]: c for c in _table_columns()}
    stream = {c["name"]: c for c in _stream_columns()}

    assert table["RowId"] == {"name": "RowId", "type": "string", "description": described["RowId"]}
    assert stream["RowId"] == {"name": "RowId", "type": "string"}
    # The transform passes every declared column on; one that projected columns would drop RowId.
    flows = body(module("dcr")["resources"]["dcr"])["properties"]["dataFlows"]
    assert [flow["transformKql"] for flow in flows] == ["source", "source", "source"]


def test_table_resource_uses_the_generated_columns_and_the_schema_name():
    table = body(module("table")["resources"]["table"])
    env = {"schema": SCHEMA}
    assert evaluate(table["name"], env) == "EmailEvents_CL"
    assert evaluate(table["properties"]["schema"]["name"], env) == "EmailEvents_CL"
    assert table["properties"]["schema"]["columns"] == "tableColumns"
    assert table["properties"]["plan"] == "plan"


def test_dcr_is_direct_and_flows_the_schema_stream_into_the_table():
    dcr = module("dcr")["resources"]["dcr"]
    config = body(dcr)
    assert config["kind"] == "Direct"
    properties = evaluate(
        config["properties"], {"schema": SCHEMA, "healthSchema": HEALTH_SCHEMA, "detailSchema": DETAIL_SCHEMA}
    )
    assert properties["streamDeclarations"] == {
        "Custom-EmailEvents": {"columns": "streamColumns"},
        "Custom-MessageTraceHealth": {"columns": "healthStreamColumns"},
        "Custom-MessageTraceDetail": {"columns": "detailStreamColumns"},
    }
    assert config["properties"]["streamDeclarations"]["'${schema.stream}'"]["columns"] == "streamColumns"
    flow, health, detail = properties["dataFlows"]
    assert flow["streams"] == [SCHEMA["stream"]] == ["Custom-EmailEvents"]
    assert flow["outputStream"] == "Custom-EmailEvents_CL"
    assert health["streams"] == [HEALTH_SCHEMA["stream"]] == ["Custom-MessageTraceHealth"]
    assert health["outputStream"] == "Custom-MessageTraceHealth_CL"
    workspace = properties["destinations"]["logAnalytics"][0]["name"]
    assert flow["destinations"] == health["destinations"] == [workspace]
    assert detail["streams"] == [DETAIL_SCHEMA["stream"]] == ["Custom-MessageTraceDetail"]
    assert detail["outputStream"] == "Custom-MessageTraceDetail_CL"
    assert detail["destinations"] == [workspace]


def test_health_schema_is_loaded_once_and_feeds_its_own_table_instance_and_the_dcr_stream():
    loads = [path.name for path in bicep_files() if "MessageTraceHealth_CL.json')" in path.read_text()]
    assert loads == ["main.bicep"]
    modules = parse(MAIN)["modules"]
    health_table = body(modules["healthTable"])
    assert (
        modules["healthTable"]["detail"]["path"]
        == modules["table"]["detail"]["path"]
        == "modules/table.bicep"
    )
    assert health_table["params"]["schema"] == "healthSchema"
    assert health_table["params"]["plan"] == "Analytics"
    assert health_table["params"]["enableQueryAudit"] is False
    assert body(modules["dcr"])["params"]["healthSchema"] == "healthSchema"
    assert {"table", "healthTable"} <= set(body(modules["dcr"])["dependsOn"])
    table = evaluate(module("table")["variables"]["tableColumns"]["value"], {"schema": HEALTH_SCHEMA})
    stream = evaluate(
        module("dcr")["variables"]["healthStreamColumns"]["value"], {"healthSchema": HEALTH_SCHEMA}
    )
    names = [c["name"] for c in HEALTH_SCHEMA["columns"]]
    assert [c["name"] for c in table] == [c["name"] for c in stream] == names
    assert {c["name"]: c["type"] for c in stream} == {c["name"]: c["type"] for c in HEALTH_SCHEMA["columns"]}


def test_table_plan_is_analytics_by_default_basic_allowed():
    spec = parse(MAIN)["parameters"]["tablePlan"]
    assert spec["default"] == "Analytics"
    allowed = [d["argument"] for d in spec["decorators"] if d["type"] == "allowed"]
    assert allowed == [["Analytics", "Basic"]]
    assert body(parse(MAIN)["modules"]["table"])["params"]["plan"] == "tablePlan"


def test_dcr_waits_for_the_table():
    assert "table" in body(parse(MAIN)["modules"]["dcr"])["dependsOn"]


def test_detail_schema_is_loaded_once_and_feeds_its_own_table_instance_the_dcr_stream_and_the_app_setting():
    loads = [path.name for path in bicep_files() if "MessageTraceDetail_CL.json')" in path.read_text()]
    assert loads == ["main.bicep"]
    modules = parse(MAIN)["modules"]
    assert modules["detailTable"]["detail"]["path"] == "modules/table.bicep"
    detail_table = body(modules["detailTable"])
    assert detail_table["params"]["schema"] == "detailSchema"
    assert (detail_table["params"]["plan"], detail_table["params"]["enableQueryAudit"]) == (
        "Analytics",
        False,
    )
    # the identity reads the detail table with workspace verification, after the mail table's role exists
    assert set(detail_table["dependsOn"]) == {"workspace", "table"}
    assert body(modules["dcr"])["params"]["detailSchema"] == "detailSchema"
    assert {"table", "healthTable", "detailTable"} <= set(body(modules["dcr"])["dependsOn"])
    assert body(modules["tenantWorkspaces"])["params"]["detailSchema"] == "detailSchema"
    table = evaluate(module("table")["variables"]["tableColumns"]["value"], {"schema": DETAIL_SCHEMA})
    stream = evaluate(
        module("dcr")["variables"]["detailStreamColumns"]["value"], {"detailSchema": DETAIL_SCHEMA}
    )
    names = [c["name"] for c in DETAIL_SCHEMA["columns"]]
    assert [c["name"] for c in table] == [c["name"] for c in stream] == names
    assert {c["name"]: c["type"] for c in stream} == {c["name"]: c["type"] for c in DETAIL_SCHEMA["columns"]}
    assert {c["name"]: c["type"] for c in table}["Data"] == "dynamic"
    assert {c["name"]: c["type"] for c in table}["EventTime"] == "dateTime"
