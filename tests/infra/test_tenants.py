"""Many tenants, one deployment (issue 14 part 2): the `tenants` parameter, TENANTS and TENANT_QUEUE.

The shared spec (the notes' tenants-spec) names the settings and the entry keys; connector/settings.py
reads them only once the connector-side change is merged, so the tests that hand the settings to
the connector are expected failures until then (they pass, unmarked, afterwards).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from connector.errors import ConfigError
from connector.settings import Settings
from tests.infra.bicep import (
    INFRA,
    MAIN,
    MODULES,
    SCHEMA_FILE,
    accessor_path,
    body,
    condition,
    declared_params,
    decorator,
    evaluate,
    loop,
    module,
    parse,
)
from tests.infra.test_app_settings import FAKE_OUTPUTS, _app_settings, _connector_settings

# The spec's TENANTS entry keys; the templates build these and no other.
SPEC_ENTRY_KEYS = {
    "name",
    "tenantId",
    "ingestionEndpoint",
    "dcrImmutableId",
    "streamName",
    "healthStreamName",
    "workspaceId",
    "localDomains",
    "graphQuotaRequests",
    "graphQuotaHeadroom",
    "enabled",
}
# The keys of a `tenants` item (main.bicep), as the brief and main.bicep's description give them.
ITEM_KEYS = [
    "name",
    "tenantId",
    "workspaceResourceId",
    "localDomains",
    "graphQuotaRequests",
    "graphQuotaHeadroom",
    "enabled",
    "useDeploymentContainer",
]
SPEC_NAME = re.compile(r"^(?!.*--)[a-z0-9](?:[a-z0-9-]{0,22}[a-z0-9])?$")
GUID = re.compile(r"^[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}$")
# Azure Storage queue names: 3-63 lower-case letters, digits and single hyphens, alphanumeric at both ends.
QUEUE_NAME = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


WORKSPACES = "providers/Microsoft.OperationalInsights/workspaces"
WS_A = f"/subscriptions/11111111-1111-1111-1111-111111111111/resourceGroups/rg-Fabrikam/{WORKSPACES}/law-fabrikam"
WS_B = f"/subscriptions/22222222-2222-2222-2222-222222222222/resourceGroups/rg-northwind/{WORKSPACES}/law-northwind"
SAMPLE_TENANTS: list[dict[str, Any]] = [
    {"name": "contoso", "tenantId": "aaaaaaaa-0000-0000-0000-000000000001"},
    {
        "name": "fabrikam",
        "tenantId": "aaaaaaaa-0000-0000-0000-000000000002",
        "workspaceResourceId": WS_A,
        "localDomains": ["fabrikam.com", "fabrikam.onmicrosoft.com"],
        "graphQuotaRequests": 80,
        "graphQuotaHeadroom": 20,
    },
    # A second Entra tenant of the same customer, into the same workspace (other spelling of its id).
    {
        "name": "fabrikam-eu",
        "tenantId": "aaaaaaaa-0000-0000-0000-000000000003",
        "workspaceResourceId": WS_A.upper(),
    },
    {
        "name": "northwind",
        "tenantId": "aaaaaaaa-0000-0000-0000-000000000004",
        "workspaceResourceId": WS_B,
        "enabled": False,
    },
]


# ----------------------------------------------------------------------------- a small evaluator


def _names(node: Any) -> list[str]:
    """``a.b.c`` on the right of a property access, as names (never evaluated)."""
    if isinstance(node, str):
        return [node]
    return accessor_path(node)


def _is_true(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"condition is not a bool: {value!r}")
    return value


def _evaluate(node: Any, env: Mapping[str, Any]) -> Any:
    """Evaluate the Bicep constructs the tenant templates use; anything else raises."""
    if isinstance(node, str):
        return env.get(node, node)
    if node is None or isinstance(node, bool | int):
        return node
    if isinstance(node, list):
        return [_evaluate(item, env) for item in node]
    if "loop_type" in node:
        kind, detail = node["loop_type"]["type"], node["loop_type"]["detail"]
        items = _evaluate(detail["array_name"], env)
        out = []
        for index, item in enumerate(items):
            scope = {**env, detail["item_name"]: item}
            if kind == "array_index":
                scope[detail["index_name"]] = index
            elif kind != "array":
                raise ValueError(kind)
            out.append(_evaluate(node["config"], scope))
        return out
    if set(node) == {"operator"}:
        kind, operands = node["operator"]["type"], node["operator"]["operands"]
        if kind == "property_accessor":
            value = _evaluate(operands["operand_1"], env)
            for name in _names(operands["operand_2"]):
                value = value[name]
            return value
        if kind == "index_accessor":
            return _evaluate(operands["operand_1"], env)[_evaluate(operands["operand_2"], env)]
        if kind == "conditional":
            chosen = "true_value" if _is_true(_evaluate(operands["condition"], env)) else "false_value"
            return _evaluate(operands[chosen], env)
        if kind == "not":
            return not _is_true(_evaluate(operands["bool_value"], env))
        raise ValueError(f"operator {kind} is not supported here")
    if set(node) == {"function"}:
        kind = node["function"]["type"]
        params = node["function"]["parameters"]
        if kind == "filter":
            lam = params["expression"]["detail"]
            items = _evaluate(params["input_array"], env)
            return [x for x in items if _is_true(_evaluate(lam["expression"], {**env, lam["var_1"]: x}))]
        args = [_evaluate(value, env) for value in params.values()]
        if kind == "union":
            if all(isinstance(arg, list) for arg in args):
                merged: list[Any] = []
                for item in (x for arg in args for x in arg):  # ARM: "duplicate values are included once"
                    if item not in merged:
                        merged.append(item)
                return merged
            return {key: value for arg in args for key, value in arg.items()}
        if kind == "contains":
            return args[1] in args[0]
        if kind == "empty":
            return args[0] is None or len(args[0]) == 0
        if kind == "to_lower":
            return args[0].lower()
        if kind == "index_of":
            return args[0].index(args[1]) if args[1] in args[0] else -1
        if kind == "split":
            return args[0].split(args[1])
        if kind == "last":
            return args[0][-1]
        if kind == "string":
            return json.dumps(args[0], separators=(",", ":"))
        raise ValueError(f"function {kind} is not supported here")
    return {key.strip("'"): _evaluate(value, env) for key, value in node.items()}


# ----------------------------------------------------------------------------- what main.bicep deploys


def _main_workspace_list(tenants: list[dict[str, Any]]) -> list[str]:
    variables = parse(MAIN)["variables"]
    keys = _evaluate(variables["tenantWorkspaceKeys"]["value"], {"tenants": tenants})
    return list(_evaluate(variables["tenantWorkspaceList"]["value"], {"tenantWorkspaceKeys": keys}))


def _fake_workspace_outputs(key: str) -> dict[str, str]:
    tag = key.rsplit("/", 1)[1]
    digest = hashlib.sha256(tag.encode()).hexdigest()  # the shapes Azure gives: 32 hex digits, a GUID
    return {
        "ingestionEndpoint": f"https://dcr-{tag}-westeurope-1.ingest.example",
        "dcrImmutableId": f"dcr-{digest[:32]}",
        "workspaceId": str(uuid.UUID(digest[:32])),
    }


def _tenant_entries(tenants: list[dict[str, Any]], *, verification: bool = True) -> tuple[list[Any], str]:
    """TENANTS as main.bicep + tenant-settings.bicep build it, with fake outputs of the workspaces' deployments."""
    workspace_list = _main_workspace_list(tenants)
    settings_module = parse(MAIN)["modules"]["tenantSettings"]
    params = body(settings_module)["params"]
    outputs = [{"outputs": _fake_workspace_outputs(key)} for key in workspace_list]
    destinations = _evaluate(
        params["destinations"], {"tenantWorkspaceList": workspace_list, "tenantWorkspaces": outputs}
    )
    env: dict[str, Any] = {
        "tenants": tenants,
        "workspaceKeys": workspace_list,
        "destinations": destinations,
        "includeWorkspaceId": verification,
    }
    settings = module("tenant-settings")
    env["tenantWorkspaceKeys"] = _evaluate(settings["variables"]["tenantWorkspaceKeys"]["value"], env)
    env["entries"] = _evaluate(settings["variables"]["entries"]["value"], env)
    outputs_of_module = settings["outputs"]
    return _evaluate(outputs_of_module["entries"]["value"], env), _evaluate(
        outputs_of_module["json"]["value"], env
    )


def _check_entry_against_spec(entry: Mapping[str, Any]) -> None:
    assert set(entry) <= SPEC_ENTRY_KEYS, sorted(set(entry) - SPEC_ENTRY_KEYS)
    assert SPEC_NAME.fullmatch(entry["name"]), entry["name"]
    assert GUID.fullmatch(entry["tenantId"]), entry["tenantId"]
    assert ("ingestionEndpoint" in entry) == ("dcrImmutableId" in entry), "both or neither"
    if "localDomains" in entry:
        assert isinstance(entry["localDomains"], list)
    for key in ("graphQuotaRequests", "graphQuotaHeadroom"):
        if key in entry:
            assert isinstance(entry[key], int)
    if "enabled" in entry:
        assert isinstance(entry["enabled"], bool)


def test_tenants_parameter_is_an_empty_array_by_default_and_describes_its_items():
    spec = parse(MAIN)["parameters"]["tenants"]
    assert spec["type"] == "array"
    assert spec["default"] == []
    description = decorator(spec, "description")
    for key in ITEM_KEYS:
        assert key in description, key


def test_tenant_entries_for_a_sample_list():
    entries, text = _tenant_entries(SAMPLE_TENANTS)
    assert json.loads(text) == entries
    fabrikam = _fake_workspace_outputs(WS_A.lower())
    northwind = _fake_workspace_outputs(WS_B.lower())
    assert entries == [
        {"name": "contoso", "tenantId": "aaaaaaaa-0000-0000-0000-000000000001"},
        {
            "name": "fabrikam",
            "tenantId": "aaaaaaaa-0000-0000-0000-000000000002",
            **fabrikam,
            "localDomains": ["fabrikam.com", "fabrikam.onmicrosoft.com"],
            "graphQuotaRequests": 80,
            "graphQuotaHeadroom": 20,
        },
        {"name": "fabrikam-eu", "tenantId": "aaaaaaaa-0000-0000-0000-000000000003", **fabrikam},
        {
            "name": "northwind",
            "tenantId": "aaaaaaaa-0000-0000-0000-000000000004",
            **northwind,
            "enabled": False,
        },
    ]
    for entry in json.loads(text):
        _check_entry_against_spec(entry)


def test_tenants_sharing_a_workspace_get_one_deployment_there():
    assert _main_workspace_list(SAMPLE_TENANTS) == [WS_A.lower(), WS_B.lower()]
    assert _main_workspace_list([{"name": "a", "tenantId": "x"}]) == []
    assert _main_workspace_list([]) == []


def test_without_workspace_verification_no_tenant_gets_a_workspace_id():
    entries, _ = _tenant_entries(SAMPLE_TENANTS, verification=False)
    assert all("workspaceId" not in entry for entry in entries)
    assert [("ingestionEndpoint" in entry) for entry in entries] == [False, True, True, True]
    assert body(parse(MAIN)["modules"]["tenantSettings"])["params"]["includeWorkspaceId"] == (
        "enableWorkspaceVerification"
    )


def test_tenants_setting_and_output_only_with_tenants():
    settings = _connector_settings()
    value, cond = settings["TENANTS"]
    assert cond == "hasTenants"
    assert accessor_path(value) == ["tenantSettings", "outputs", "json"]
    main = parse(MAIN)
    assert condition(main["modules"]["tenantSettings"]) == "hasTenants"
    output = main["outputs"]["TENANTS"]
    assert output["type"] == "array"
    operands = output["value"]["operator"]["operands"]
    assert operands["condition"] == "hasTenants"
    assert accessor_path(operands["true_value"]) == ["tenantSettings", "outputs", "entries"]
    assert operands["false_value"] == []
    assert not [name for name in main["outputs"] if "SECRET" in name or name.endswith("_KEY")]


def test_tenant_settings_reads_the_keys_main_passes():
    main = parse(MAIN)
    params = body(main["modules"]["tenantSettings"])["params"]
    assert params["tenants"] == "tenants"
    assert params["workspaceKeys"] == "tenantWorkspaceList"
    assert loop(main["modules"]["tenantWorkspaces"]) == {
        "type": "array",
        "detail": {"item_name": "key", "array_name": "tenantWorkspaceList"},
    }
    # one destination per deployed workspace, in the loop's order
    assert params["destinations"]["loop_type"]["detail"]["array_name"] == "tenantWorkspaceList"
    assert set(params["destinations"]["config"]) == {"ingestionEndpoint", "dcrImmutableId", "workspaceId"}
    # main and the module key a tenant's workspace the same way
    assert (
        main["variables"]["tenantWorkspaceKeys"]["value"]
        == module("tenant-settings")["variables"]["tenantWorkspaceKeys"]["value"]
    )
    wrapper_outputs = set(module("tenant-workspace")["outputs"])
    assert set(params["destinations"]["config"]) <= wrapper_outputs


# ----------------------------------------------------------------------------- cross-scope wiring


def test_each_customer_workspace_is_deployed_into_its_own_resource_group():
    declaration = parse(MAIN)["modules"]["tenantWorkspaces"]
    assert declaration["detail"]["path"] == "modules/tenant-workspace.bicep"
    config = body(declaration)
    scope = config["scope"]["function"]
    assert scope["type"] == "resource_group"
    env = {"key": WS_A.lower()}
    assert _evaluate(scope["parameters"]["subscription_id"], env) == "11111111-1111-1111-1111-111111111111"
    assert _evaluate(scope["parameters"]["resource_group_name"], env) == "rg-fabrikam"
    params = config["params"]
    assert _evaluate(params["workspaceName"], env) == "law-fabrikam"
    assert params["schema"] == "schema"
    assert params["healthSchema"] == "healthSchema"
    assert params["detailSchema"] == "detailSchema"
    assert accessor_path(params["publisherPrincipalId"]) == ["identity", "outputs", "principalId"]
    reader = params["readerPrincipalId"]["operator"]["operands"]
    assert reader["condition"] == "enableWorkspaceVerification"
    assert accessor_path(reader["true_value"]) == ["identity", "outputs", "principalId"]
    assert reader["false_value"] == ""
    assert params["identityTenantId"] == "identityTenantId"
    identity_tenant = parse(MAIN)["variables"]["identityTenantId"]["value"]["operator"]["operands"]
    assert identity_tenant["operand_1"]["function"]["type"] == "subscription"
    assert identity_tenant["operand_2"] == "tenantId"
    assert "tenantChecks" in config["dependsOn"]


def test_customer_workspace_names_fit_azure_limits():
    longest = "b" * 12  # baseName's @maxLength
    config = body(parse(MAIN)["modules"]["tenantWorkspaces"])
    unique = "x" * 13  # uniqueString() is always 13 characters
    for template, limit in (
        (config["params"]["dcrName"], 30),  # a kind Direct DCR name
        (config["name"], 64),  # a deployment name
        (config["params"]["deploymentPrefix"] + "-healthtable", 64),
    ):
        name = re.sub(r"\$\{uniqueString\([^}]*\)\}", unique, template).replace("${baseName}", longest)
        assert "${" not in name, name
        assert len(name) <= limit, name
    assert decorator(module("tenant-workspace")["parameters"]["dcrName"], "max_length") == 30


def test_the_wrapper_reuses_table_and_dcr_in_the_customer_resource_group():
    wrapper = module("tenant-workspace")
    assert wrapper["globals"]["scope"]["value"] == "resourceGroup"
    modules = wrapper["modules"]
    assert {name: m["detail"]["path"] for name, m in modules.items()} == {
        "table": "table.bicep",
        "healthTable": "table.bicep",
        "detailTable": "table.bicep",
        "dcr": "dcr.bicep",
    }
    for name, declaration in modules.items():
        config = body(declaration)
        assert "scope" not in config, f"{name} must land in the wrapper's (the customer's) resource group"
        assert config["name"].startswith("${deploymentPrefix}-"), name
        declared = declared_params(module(declaration["detail"]["path"].removesuffix(".bicep")))
        passed = set(config["params"])
        assert passed <= set(declared), name
        assert {p for p, default in declared.items() if default is None} <= passed, name
    table, health, dcr = (body(modules[name])["params"] for name in ("table", "healthTable", "dcr"))
    assert table["schema"] == dcr["schema"] == "schema"
    assert health["schema"] == dcr["healthSchema"] == "healthSchema"
    assert health["plan"] == "Analytics"
    assert table["enableQueryAudit"] is False
    assert health["enableQueryAudit"] is False
    assert table["readerPrincipalId"] == "readerPrincipalId"
    assert health["readerPrincipalId"] == ""
    assert set(body(modules["dcr"])["dependsOn"]) == {"table", "healthTable", "detailTable"}
    detail = body(modules["detailTable"])
    assert detail["params"]["schema"] == dcr["detailSchema"] == "detailSchema"
    assert (detail["params"]["plan"], detail["params"]["enableQueryAudit"]) == ("Analytics", False)
    # enrich reads the detail table too; after the mail table, whose workspace query role it shares
    assert detail["params"]["readerPrincipalId"] == "readerPrincipalId"
    assert detail["dependsOn"] == ["table"]
    assert accessor_path(dcr["location"]) == ["workspace", "location"]
    assert accessor_path(dcr["workspaceResourceId"]) == ["workspace", "id"]
    existing = wrapper["resources"]["workspace"]
    assert existing["existing"] is True
    assert existing["type"] == "Microsoft.OperationalInsights/workspaces"


def test_the_wrapper_refuses_a_workspace_of_another_entra_tenant():
    wrapper = module("tenant-workspace")
    assert body(wrapper["modules"]["dcr"])["params"]["publisherPrincipalId"] == "publisher"
    text = (MODULES / "tenant-workspace.bicep").read_text()
    assert (
        "var publisher = subscription().tenantId == identityTenantId ? publisherPrincipalId : fail(" in text
    )


def test_a_new_schema_column_reaches_the_customer_tables_and_dcr_unchanged():
    """SourceTenantId (the spec's new column) comes from the schema files; no template lists columns."""
    schema = json.loads(SCHEMA_FILE.read_text())
    column = {"name": "SourceTenantId", "type": "string", "description": "tenant the row was read from"}
    grown = {**schema, "columns": [*schema["columns"], column]}
    table = evaluate(module("table")["variables"]["tableColumns"]["value"], {"schema": grown})
    stream = evaluate(module("dcr")["variables"]["streamColumns"]["value"], {"schema": grown})
    assert table[-1] == column
    assert stream[-1] == {"name": "SourceTenantId", "type": "string"}
    for name in ("tenant-workspace", "tenant-settings", "tenant-checks"):
        text = (MODULES / f"{name}.bicep").read_text()
        assert "loadJsonContent" not in text, f"{name} must get the schema from main.bicep"
        assert "columns" not in text, name


# ----------------------------------------------------------------------------- checks and auth modes


def test_graph_auth_modes_and_the_checks_module():
    main = parse(MAIN)
    spec = main["parameters"]["graphAuthMode"]
    assert decorator(spec, "allowed") == ["managed_identity", "client_secret", "federated_identity"]
    assert spec["default"] == "managed_identity"
    checks = main["modules"]["tenantChecks"]
    assert checks["detail"]["path"] == "modules/tenant-checks.bicep"
    either = {"type": "or", "operands": {"operand_1": "hasTenants", "operand_2": "isFederated"}}
    assert condition(checks) == {"operator": either}
    assert body(checks)["params"] == {
        "tenants": "tenants",
        "graphAuthMode": "graphAuthMode",
        "clientId": "clientId",
        "mainWorkspaceResourceId": "mainWorkspaceResourceId",
    }
    # Everything a bad list could break waits for the checks.
    for name in ("tenantWorkspaces", "tenantSettings", "functionApp", "graphFederation"):
        assert "tenantChecks" in body(main["modules"][name])["dependsOn"], name
    checks_module = module("tenant-checks")
    assert checks_module["variables"]["allowedKeys"]["value"] == ITEM_KEYS
    text = (MODULES / "tenant-checks.bicep").read_text()
    assert "graphAuthMode == 'managed_identity' && !empty(tenants) ? [managedIdentityMessage] : []" in text
    assert "graphAuthMode == 'federated_identity' && empty(clientId) ? [clientIdMessage] : []" in text
    assert "var tenantCount = empty(problems) ? length(tenants) : fail(join(problems, ' '))" in text


def test_federated_credential_module():
    main = parse(MAIN)
    declaration = main["modules"]["graphFederation"]
    assert declaration["detail"]["path"] == "modules/graph-federation.bicep"
    cond = condition(declaration)["operator"]
    assert cond["type"] == "and"
    assert cond["operands"]["operand_1"] == "isFederated"
    params = body(declaration)["params"]
    assert params["appUniqueName"] == "federatedAppUniqueName"
    assert params["clientId"] == "clientId"
    assert accessor_path(params["principalId"]) == ["identity", "outputs", "principalId"]
    assert params["identityTenantId"] == "identityTenantId"
    assert len(params["credentialName"].replace("${baseName}", "b" * 12).replace("${token}", "x" * 13)) <= 120
    federation = module("graph-federation")
    assert "microsoftGraphV1" in federation["extensions"]
    app = federation["resources"]["app"]
    assert (app["type"], app["api_version"], app["existing"]) == (
        "Microsoft.Graph/applications",
        "v1.0",
        True,
    )
    assert body(app) == {"uniqueName": "appUniqueName"}
    credential = federation["resources"]["app__managedIdentityCredential"]
    assert credential["type"].startswith("Microsoft.Graph/applications/federatedIdentityCredentials")
    assert credential["api_version"] == "v1.0"
    config = body(credential)
    assert config["name"] == "${app.uniqueName}/${credentialName}"
    assert config["issuer"] == "${environment().authentication.loginEndpoint}${identityTenantId}/v2.0"
    assert config["subject"] == "principalId"
    assert config["audiences"] == ["tokenExchangeAudience"]
    assert federation["variables"]["tokenExchangeAudience"]["value"] == "api://AzureADTokenExchange"


def test_client_id_is_set_for_client_secret_and_federated_identity():
    assert _connector_settings()["CLIENT_ID"][1] == "usesClientId"
    env = _app_settings(
        {"graphAuthMode": "federated_identity", "clientId": "app-id"},
        verification=True,
        client_secret=False,
        federated=True,
    )
    assert env["GRAPH_AUTH_MODE"] == "federated_identity"
    assert env["CLIENT_ID"] == "app-id"
    assert env["MANAGED_IDENTITY_CLIENT_ID"] == FAKE_OUTPUTS["MANAGED_IDENTITY_CLIENT_ID"]
    assert "CLIENT_SECRET" not in env


# ----------------------------------------------------------------------------- the tenant queue


def test_tenant_queue_and_its_poison_queue_are_created_beside_the_backfill_queue():
    main = parse(MAIN)
    spec = main["parameters"]["tenantQueueName"]
    assert spec["default"] == "tenant-runs"  # the spec's TENANT_QUEUE default
    assert QUEUE_NAME.fullmatch(spec["default"])
    longest = decorator(spec, "max_length")
    assert decorator(spec, "min_length") == 3
    assert len("q" * longest + "-poison") <= 63, "the host's <name>-poison queue must fit 63 characters"
    assert longest == decorator(main["parameters"]["backfillQueueName"], "max_length")
    queues = body(main["modules"]["storage"])["params"]["queueNames"]
    assert queues == [
        "backfillQueueName",
        "${backfillQueueName}-poison",
        "tenantQueueName",
        "${tenantQueueName}-poison",
    ]
    value, cond = _connector_settings()["TENANT_QUEUE"]
    assert (value, cond) == ("tenantQueueName", None)
    assert accessor_path(main["outputs"]["TENANT_QUEUE"]["value"]) == ["tenantQueueName"]
    # One Storage Queue Data Contributor assignment on the account covers every queue.
    assignment = body(module("storage")["resources"]["queueContributor"])
    assert assignment["scope"] == "account"


# ----------------------------------------------------------------------------- the connector's view


def _tenant_env(*, federated: bool) -> dict[str, str]:
    _, text = _tenant_entries(SAMPLE_TENANTS)
    overrides: dict[str, object] = {"localDomains": "contoso.com"}
    if federated:
        overrides |= {"graphAuthMode": "federated_identity", "clientId": "app-id"}
    else:
        overrides |= {"graphAuthMode": "client_secret", "clientId": "app-id"}
    return _app_settings(
        overrides,
        verification=True,
        client_secret=not federated,
        federated=federated,
        tenants_json=text,
    )


def test_the_connector_accepts_the_tenants_setting():
    env = _tenant_env(federated=False)
    assert json.loads(env["TENANTS"])[0]["name"] == "contoso"
    Settings.from_env(env)  # the templates' value is accepted ...
    broken = json.loads(env["TENANTS"])
    broken[0]["workspaceResourceId"] = WS_A  # a deployment-only key (spec: unknown keys refused)
    with pytest.raises(ConfigError):  # ... and the connector really reads it
        Settings.from_env({**env, "TENANTS": json.dumps(broken)})


def test_the_connector_accepts_a_federated_multi_tenant_deployment():
    Settings.from_env(_tenant_env(federated=True))


# ----------------------------------------------------------------------------- documentation


def test_readme_explains_many_tenants():
    readme = (INFRA / "README.md").read_text()
    section = readme.split("## Many tenants", 1)[1].split("\n## ", 1)[0]
    for text in (
        "https://login.microsoftonline.com/<customer tenant id>/adminconsent?client_id=<clientId>",
        "ExchangeMessageTrace.Read.All",
        "89b20d8a-76e2-4057-867b-9961f800b9a4",
        "8bd644d1-64a1-4d4b-ae52-2e0cbf64e373",
        "api://AzureADTokenExchange",
        "az deployment group validate",
        "az deployment group what-if",
        "User Access Administrator",
        "Lighthouse",
        "DataActions",
        "SourceTenantId",
        "TENANT_QUEUE",
        "az ad app federated-credential create",
    ):
        assert text in section, text
    for key in ITEM_KEYS:
        assert f"`{key}`" in section, key
