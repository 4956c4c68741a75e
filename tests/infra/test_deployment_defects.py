"""What Azure refused or would refuse on a first real deployment (issue 10, defects 1-8).

Each test pins one fix so the defect cannot come back: properties Flex Consumption
rejects, parameter ranges Azure enforces, name lengths, and the defaults that make a
first deployment into an existing Sentinel workspace succeed.
"""

import json

from tests.infra.bicep import MAIN, ROOT, body, decorator, leaves, module, parse

# Flex Consumption refuses these site properties (functions-app-settings, "Flex
# Consumption plan deprecations": FTPS not supported) or the Flex samples never set them.
FLEX_REFUSED_SITE_CONFIG = {"ftpsState", "http20Enabled"}


def _keys(node: object) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            found.add(key)
            found |= _keys(value)
    elif isinstance(node, list):
        for value in node:
            found |= _keys(value)
    return found


def test_flex_site_sets_no_ftps_state_and_no_http20():
    site = body(module("functionapp")["resources"]["site"])
    assert not _keys(site) & FLEX_REFUSED_SITE_CONFIG
    text = (MAIN.parent / "modules" / "functionapp.bicep").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//"))
    for name in FLEX_REFUSED_SITE_CONFIG:
        assert name not in code, f"functionapp.bicep sets {name}"


def test_flex_site_config_holds_only_the_app_settings():
    """Azure-Samples Flex templates set only appSettings in siteConfig: nothing else to refuse."""
    site_config = body(module("functionapp")["resources"]["site"])["properties"]["siteConfig"]
    assert set(site_config) == {"appSettings"}


def test_maximum_instance_count_is_limited_to_what_flex_accepts():
    """Flex accepts 40-1000 (below 40 only in preview regions: MicrosoftDocs/azure-docs#128255)."""
    for parsed in (parse(MAIN), module("functionapp")):
        spec = parsed["parameters"]["maximumInstanceCount"]
        assert decorator(spec, "min_value") == 40
        assert decorator(spec, "max_value") == 1000
        assert 40 <= spec["default"] <= 1000
    passed = body(parse(MAIN)["modules"]["functionApp"])["params"]["maximumInstanceCount"]
    assert passed == "maximumInstanceCount"


def _dcr_name(base_name: str) -> str:
    names = parse(MAIN)["variables"]["names"]["value"]
    template = names["dcr"]
    token = "x" * 13  # uniqueString() is always 13 characters
    return template.replace("${baseName}", base_name).replace("${token}", token)


def test_dcr_name_fits_30_characters_at_the_longest_base_name():
    """A kind: Direct DCR name longer than 30 characters is refused; baseName has 12 at most."""
    spec = parse(MAIN)["parameters"]["baseName"]
    longest = decorator(spec, "max_length")
    assert longest == 12
    name = _dcr_name("b" * longest)
    assert len(name) <= 30, name


def _defaults_to_new_workspace(parameter: str) -> None:
    """The default is ``empty(existingWorkspaceResourceId)``: on for a new workspace only."""
    default = parse(MAIN)["parameters"][parameter]["default"]
    assert default == {
        "function": {"type": "empty", "parameters": {"item_to_test": "existingWorkspaceResourceId"}}
    }


def test_query_audit_defaults_off_for_an_existing_workspace_and_on_for_a_new_one():
    """A Sentinel workspace usually sends Audit to itself already; a second such setting is
    refused ("Data sink ... is already used"), so an existing workspace gets none by default."""
    _defaults_to_new_workspace("enableQueryAudit")
    params = body(parse(MAIN)["modules"]["table"])["params"]
    assert params["enableQueryAudit"] == "enableQueryAudit"
    table = module("table")
    assert table["parameters"]["enableQueryAudit"]["default"] is True
    audit = table["resources"]["queryAudit"]
    assert audit["type"] == "Microsoft.Insights/diagnosticSettings"
    assert audit["config"]["condition"] == "enableQueryAudit"


def test_sentinel_onboarding_defaults_on_for_a_new_workspace():
    _defaults_to_new_workspace("enableSentinel")
    declaration = parse(MAIN)["modules"]["sentinel"]
    assert declaration["config"]["condition"] == "enableSentinel"
    config = body(declaration)
    assert "workspace" in config["dependsOn"]
    assert config["params"] == {"workspaceName": "workspaceName"}
    # deployed where the workspace lives, like the table
    assert config["scope"] == body(parse(MAIN)["modules"]["table"])["scope"]
    onboarding = module("sentinel")["resources"]["onboarding"]
    assert onboarding["type"] == "Microsoft.SecurityInsights/onboardingStates"
    assert onboarding["api_version"] == "2025-09-01"
    assert body(onboarding) == {"name": "default", "scope": "workspace", "properties": {}}


def test_application_insights_writes_to_its_own_workspace_not_the_sentinel_one():
    """Telemetry in the Sentinel workspace is billed at Sentinel rates."""
    params = body(parse(MAIN)["modules"]["monitoring"])["params"]
    assert params["existingWorkspaceResourceId"] == "appInsightsWorkspaceResourceId"
    assert params["workspaceName"]["operator"]["operands"]["operand_2"] == "appInsightsWorkspace"
    assert "workspace" not in set(leaves(params)), "monitoring must not get the connector's workspace"
    assert parse(MAIN)["parameters"]["appInsightsWorkspaceResourceId"]["default"] == ""
    names = parse(MAIN)["variables"]["names"]["value"]
    assert names["appInsightsWorkspace"] != names["workspace"]
    monitoring = module("monitoring")
    assert monitoring["resources"]["telemetryWorkspace"]["type"] == "Microsoft.OperationalInsights/workspaces"
    component = body(monitoring["resources"]["appInsights"])
    assert component["properties"]["WorkspaceResourceId"] == "workspaceResourceId"


def test_host_json_never_samples_warnings_errors_or_runs():
    """Sampling works per telemetry type: Python log records (warnings included) are
    traces, exceptions are exceptions, runs are requests. None of them may be dropped."""
    host = json.loads((ROOT / "host.json").read_text())
    sampling = host["logging"]["applicationInsights"]["samplingSettings"]
    excluded = set(sampling["excludedTypes"].split(";"))
    assert {"Trace", "Exception", "Request"} <= excluded
    assert "includedTypes" not in sampling
