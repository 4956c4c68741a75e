"""The data connector card (infra/sentinel/Data Connectors/MessageTraceConnector.json) is a definition the API takes.

Why: Sentinel's Data connectors page shows the feed only through a Codeless Connector
Framework definition (``Microsoft.SecurityInsights/dataConnectorDefinitions``, kind
``Customizable``), and nothing here can deploy it. These tests check, without Azure, that
the file carries only the API's property names, the queries in their documented forms,
the id the analytic rules and hunting queries name, and that
``modules/sentinel-connector.bicep`` deploys it with the rest of the Sentinel content.
The queries themselves are analysed by tests/unit/test_kql.py.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from tests.infra.bicep import INFRA, MAIN, MODULES, ROOT, body, condition, parse

MODULE = MODULES / "sentinel-connector.bicep"
DEFINITION = INFRA / "sentinel" / "Data Connectors" / "MessageTraceConnector.json"
CONNECTOR_ID = "MessageTraceConnector"
API_VERSION = "2025-09-01"
RESOURCE_TYPE = "Microsoft.SecurityInsights/dataConnectorDefinitions"

# Property names of the API, Azure/bicep-types-az
# generated/securityinsights/microsoft.securityinsights/2025-09-01/types.md
# (https://github.com/Azure/bicep-types-az/blob/main/generated/securityinsights/microsoft.securityinsights/2025-09-01/types.md):
# CustomizableConnectorDefinitionProperties
API_DEFINITION_PROPERTIES = {"connectionsConfig", "connectorUiConfig", "createdTimeUtc", "lastModifiedUtc"}
# CustomizableConnectorUiConfig, and which of them are (Required)
API_UI_CONFIG = {
    "availability",
    "connectivityCriteria",
    "dataTypes",
    "descriptionMarkdown",
    "graphQueries",
    "id",
    "instructionSteps",
    "isConnectivityCriteriasMatchSome",
    "logo",
    "permissions",
    "publisher",
    "title",
}
API_UI_CONFIG_REQUIRED = {
    "connectivityCriteria",
    "dataTypes",
    "descriptionMarkdown",
    "graphQueries",
    "instructionSteps",
    "permissions",
    "publisher",
    "title",
}
# Not in the API type, but a required field of Learn's "Data connector definitions reference
# for the Codeless Connector Framework" (learn.microsoft.com/azure/sentinel/
# data-connector-ui-definitions-reference, sampleQueries: description, query), shipped by
# Azure-Sentinel's definitions (Solutions/GitHub/Data Connectors/GitHubAuditLogs_CCF/).
LEARN_UI_CONFIG = {"sampleQueries"}
LEARN_SAMPLE_QUERY = {"description", "query"}
API_GRAPH_QUERY = {"metricName", "legend", "baseQuery"}  # GraphQuery, all required
API_DATA_TYPE = {"name", "lastDataReceivedQuery"}  # ConnectorDataType, all required
API_CONNECTIVITY_CRITERION = {"type", "value"}  # ConnectivityCriterion, type required
API_AVAILABILITY = {"isPreview", "status"}  # ConnectorDefinitionsAvailability
API_PERMISSIONS = {"customs", "licenses", "resourceProvider", "tenant"}  # ConnectorDefinitionsPermissions
API_RESOURCE_PROVIDER = {  # ConnectorDefinitionsResourceProvider, all required
    "permissionsDisplayText",
    "provider",
    "providerDisplayName",
    "requiredPermissions",
    "scope",
}
API_REQUIRED_PERMISSIONS = {"action", "delete", "read", "write"}  # ResourceProviderRequiredPermissions
API_CUSTOM_PERMISSION = {"name", "description"}  # CustomPermissionDetails, all required
API_INSTRUCTION_STEP = {"description", "innerSteps", "instructions", "title"}  # InstructionStep
API_INSTRUCTION = {"type", "parameters"}  # InstructionStepDetails, both required
# Instruction types the Learn reference documents, with their parameters.
LEARN_INSTRUCTION_PARAMETERS = {
    "CopyableLabel": {"fillWith", "label", "value", "rows", "wideLabel"},
    "InfoMessage": {"text", "visible", "inline"},
}
# Azure-Sentinel's file shape for a Customizable definition (the GitHub file above).
FILE_KEYS = {"name", "apiVersion", "type", "kind", "properties"}

# The documented forms (Learn page above): dataTypes lastDataReceivedQuery, and the
# IsConnectedQuery example ending `| project IsConnected = LastLogReceived > ago(7d)`.
LAST_DATA_RECEIVED = re.compile(
    r"^(\w+)\s*\|\s*summarize Time = max\(TimeGenerated\)\s*\|\s*where isnotempty\(Time\)$"
)
IS_CONNECTED = re.compile(
    r"^(\w+)\s*\|\s*summarize LastLogReceived = max\(TimeGenerated\)\s*"
    r"\|\s*project IsConnected = LastLogReceived > ago\((\d+)d\)$"
)


def _definition() -> dict[str, Any]:
    return json.loads(DEFINITION.read_text(encoding="utf-8"))


def _ui() -> dict[str, Any]:
    return _definition()["properties"]["connectorUiConfig"]


def _tables() -> set[str]:
    return {json.loads(p.read_text())["table"] for p in (ROOT / "connector" / "data").glob("*.json")}


# ----------------------------------------------------------------------------- the definition file


def test_the_file_has_azure_sentinels_shape_for_a_customizable_definition():
    definition = _definition()

    assert set(definition) == FILE_KEYS
    assert definition["type"] == RESOURCE_TYPE
    assert definition["kind"] == "Customizable"
    assert definition["apiVersion"] == API_VERSION
    assert set(definition["properties"]) <= API_DEFINITION_PROPERTIES
    assert re.fullmatch(r"[a-z0-9A-Z_-]+", definition["name"]), "name pattern of the API"


def test_the_resource_name_and_the_card_id_are_the_connector_id():
    assert _definition()["name"] == _ui()["id"] == CONNECTOR_ID


def test_the_ui_config_uses_only_the_apis_and_the_documented_fields_and_all_required_ones():
    ui = _ui()

    assert set(ui) <= API_UI_CONFIG | LEARN_UI_CONFIG, set(ui) - API_UI_CONFIG - LEARN_UI_CONFIG
    assert set(ui) >= API_UI_CONFIG_REQUIRED | LEARN_UI_CONFIG
    assert all(set(q) == API_GRAPH_QUERY for q in ui["graphQueries"])
    assert ui["sampleQueries"]
    assert all(set(q) == LEARN_SAMPLE_QUERY for q in ui["sampleQueries"])
    assert all(set(t) == API_DATA_TYPE for t in ui["dataTypes"])
    assert all(set(c) <= API_CONNECTIVITY_CRITERION and "type" in c for c in ui["connectivityCriteria"])
    assert set(ui.get("availability", {})) <= API_AVAILABILITY


def test_permissions_and_instructions_use_the_apis_names_and_documented_instruction_types():
    ui = _ui()
    permissions = ui["permissions"]

    assert set(permissions) <= API_PERMISSIONS
    for provider in permissions["resourceProvider"]:
        assert set(provider) == API_RESOURCE_PROVIDER
        assert set(provider["requiredPermissions"]) <= API_REQUIRED_PERMISSIONS
        assert provider["scope"] in {"ResourceGroup", "Subscription", "Workspace"}
    workspace = [
        p
        for p in permissions["resourceProvider"]
        if p["provider"] == "Microsoft.OperationalInsights/workspaces"
    ]
    assert workspace
    assert workspace[0]["requiredPermissions"]["read"]
    assert workspace[0]["requiredPermissions"]["write"]
    assert all(set(c) == API_CUSTOM_PERMISSION for c in permissions["customs"])
    for step in ui["instructionSteps"]:
        assert set(step) <= API_INSTRUCTION_STEP
        for instruction in step.get("instructions", []):
            assert set(instruction) == API_INSTRUCTION
            assert set(instruction["parameters"]) <= LEARN_INSTRUCTION_PARAMETERS[instruction["type"]]


def test_every_data_type_is_a_table_of_the_connector_with_the_documented_last_data_query():
    for data_type in _ui()["dataTypes"]:
        match = LAST_DATA_RECEIVED.match(data_type["lastDataReceivedQuery"])
        assert match, data_type["lastDataReceivedQuery"]
        assert match.group(1) == data_type["name"]
        assert data_type["name"] in _tables()
    # the mail table, and the health table the ConnectorHealth rule reads
    assert {t["name"] for t in _ui()["dataTypes"]} == {"EmailEvents_CL", "MessageTraceHealth_CL"}


def test_the_card_is_connected_by_a_query_on_the_table_in_the_documented_form():
    (criterion,) = _ui()["connectivityCriteria"]

    assert criterion["type"] == "IsConnectedQuery"
    (query,) = criterion["value"]
    match = IS_CONNECTED.match(query)
    assert match, query
    assert match.group(1) == "EmailEvents_CL"
    assert match.group(2) == "1", (
        "infra/README.md 'Data connector card' says Connected means a row in the last day"
    )
    assert "isConnectivityCriteriasMatchSome" not in _ui()


def test_the_chart_counts_each_table_itself():
    graphs = _ui()["graphQueries"]

    assert all(graph["baseQuery"] == graph["legend"] for graph in graphs)
    assert [graph["baseQuery"] for graph in graphs] == ["EmailEvents_CL", "MessageTraceHealth_CL"]


def _strings(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [s for value in node.values() for s in _strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [node] if isinstance(node, str) else []


def test_the_instructions_name_the_graph_permission_and_the_project_scripts_that_exist():
    text = json.dumps(_ui())

    assert "ExchangeMessageTrace.Read.All" in text
    assert "8bd644d1-64a1-4d4b-ae52-2e0cbf64e373" in text
    for script in re.findall(r"infra/scripts/[\w.-]+", text):
        assert (ROOT / script).is_file(), script
    assert "infra/main.bicep" in text


def test_every_readme_section_the_card_points_to_exists():
    headings = {
        line.lstrip("#").strip()
        for readme in (ROOT / "README.md", INFRA / "README.md")
        for line in readme.read_text().splitlines()
        if line.startswith("#")
    }
    cited = [
        section
        for string in _strings(_ui())
        if "README" in string
        for section in re.findall(r'"([^"]+)"', string)
    ]

    assert "README" in _ui()["descriptionMarkdown"]
    assert "Data connector card" in cited
    assert [s for s in cited if not any(h.startswith(s) for h in headings)] == []


def test_the_card_title_and_publisher():
    assert _ui()["title"] == "Microsoft 365 message trace (Graph)"
    assert _ui()["publisher"] == "message-trace-connector"


# ----------------------------------------------------------------------------- content names the card


def _required_data_connectors() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((INFRA / "sentinel").rglob("*.y*ml")):
        doc = yaml.safe_load(path.read_text())
        connectors = doc.get("requiredDataConnectors") if isinstance(doc, dict) else None
        found.extend((path.relative_to(INFRA).as_posix(), connector) for connector in connectors or [])
    return found


def test_every_required_data_connector_of_the_content_is_this_card_and_one_of_its_data_types():
    data_types = {t["name"] for t in _ui()["dataTypes"]}
    found = _required_data_connectors()

    assert len(found) >= 13, "the analytic rules and hunting queries all name the card"
    for where, connector in found:
        assert connector["connectorId"] == _ui()["id"], where
        assert connector["dataTypes"], where
        assert set(connector["dataTypes"]) <= data_types, where


# ----------------------------------------------------------------------------- the module and main


def test_the_module_deploys_the_file_as_a_customizable_definition_on_the_workspace():
    parsed = parse(MODULE)
    resource = parsed["resources"]["connectorDefinition"]
    config = body(resource)

    assert (resource["type"], resource["api_version"]) == (RESOURCE_TYPE, API_VERSION)
    assert config["kind"] == "Customizable"
    assert config["scope"] == "workspace"
    assert parsed["resources"]["workspace"]["existing"] is True
    loaded = parsed["variables"]["definition"]["value"]["function"]
    assert loaded["type"] == "load_json_content"
    assert (MODULES / loaded["parameters"]["file_path"]).resolve() == DEFINITION.resolve()
    assert "definition" in json.dumps(config["name"])
    assert '"name"' in json.dumps(config["name"])
    assert set(config["properties"]) == {"connectorUiConfig"}
    assert "connectorUiConfig" in json.dumps(config["properties"]["connectorUiConfig"])


def test_the_module_cites_the_api_version_and_its_sources():
    header = MODULE.read_text().split("@description", 1)[0]

    assert API_VERSION in header
    assert "bicep-types-az" in header
    assert "data-connector-ui-definitions-reference" in header
    assert "func " not in MODULE.read_text()


def test_main_deploys_the_card_with_the_sentinel_content_where_the_workspace_lives():
    declaration = parse(MAIN)["modules"]["sentinelConnector"]
    config = body(declaration)

    assert declaration["detail"]["path"] == "modules/sentinel-connector.bicep"
    assert condition(declaration) == "deploySentinelContent"
    assert config["scope"] == body(parse(MAIN)["modules"]["table"])["scope"]
    assert set(config["dependsOn"]) == {"table", "sentinel"}
    assert config["params"] == {"workspaceName": "workspaceName"}
