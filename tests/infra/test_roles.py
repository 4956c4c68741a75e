"""Least privilege: the six role assignments, their ids and their scopes."""

import re

import pytest

from tests.infra.bicep import (
    INFRA,
    MAIN,
    MODULES,
    accessor_path,
    body,
    condition,
    declared_params,
    module,
    parse,
)

# Built-in role definition ids (the same in every tenant), checked against the templates.
ROLES = {
    "Monitoring Metrics Publisher": (
        "3913510d-42f4-4e42-8a64-420c390055eb",
        "dcr",
        "Microsoft.Insights/dataCollectionRules",
    ),
    "Storage Blob Data Owner": (
        "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
        "storage",
        "Microsoft.Storage/storageAccounts",
    ),
    "Storage Queue Data Contributor": (
        "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
        "storage",
        "Microsoft.Storage/storageAccounts",
    ),
    "Key Vault Secrets User": (
        "4633458b-17de-408a-b874-0445c86b69e6",
        "keyvault",
        "Microsoft.KeyVault/vaults",
    ),
    "Reader": (
        "acdd72a7-3385-48ef-bd42-f606fba81ae7",
        "table",
        "Microsoft.OperationalInsights/workspaces/tables",
    ),
}
# Microsoft's table-level read access: Reader on the table is refused for a query unless
# the principal may also run queries in the workspace, which this custom role allows
# without any table data (learn "Manage table-level read access in a Log Analytics workspace").
WORKSPACE_QUERY_ACTIONS = [
    "Microsoft.OperationalInsights/workspaces/read",
    "Microsoft.OperationalInsights/workspaces/query/read",
]
WORKSPACE_QUERY_NOT_ACTIONS = ["Microsoft.OperationalInsights/workspaces/sharedKeys/read"]
# Roles that must never be granted by these templates.
TOO_BROAD = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635",  # Owner
    "b24988ac-6180-42a0-ab88-20f7382dd24c",  # Contributor
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe",  # Storage Blob Data Contributor (Owner is used instead)
    "92aaf0da-9dab-42b6-94a3-d43ce8d16293",  # Log Analytics Contributor
    "73c42c96-874c-492b-b04d-ab87d138a893",  # Log Analytics Reader: every table of the workspace
}
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
MESSAGE_TRACE_APP_ID = "8bd644d1-64a1-4d4b-ae52-2e0cbf64e373"
MESSAGE_TRACE_ROLE_ID = "89b20d8a-76e2-4057-867b-9961f800b9a4"  # ExchangeMessageTrace.Read.All
# Domain.Read.All (application): https://learn.microsoft.com/graph/permissions-reference#domainreadall
DOMAIN_READ_ROLE_ID = "dbb9058a-0e50-45d7-ae91-66909b5d4664"


def _assignments() -> list[tuple[str, str, dict, dict]]:
    """(module file stem, role id, resource declaration, its scope's declaration).

    A custom role defined in the same file appears with the role id ``custom:<resource>``.
    """
    found = []
    for path in sorted(INFRA.rglob("*.bicep")):
        parsed = parse(path)
        resources = parsed.get("resources", {})
        for resource in resources.values():
            if resource["type"] != "Microsoft.Authorization/roleAssignments":
                continue
            config = body(resource)
            reference = config["properties"]["roleDefinitionId"]
            if "operator" in reference:
                definition, attribute = accessor_path(reference)
                assert attribute == "id"
                assert resources[definition]["type"] == "Microsoft.Authorization/roleDefinitions"
                found.append((path.stem, f"custom:{definition}", resource, resources[config["scope"]]))
                continue
            role_ref = reference["function"]
            assert role_ref["type"] == "subscription_resource_id"
            assert role_ref["parameters"]["resource_type"] == "Microsoft.Authorization/roleDefinitions"
            role_id = parsed["variables"][role_ref["parameters"]["resource_name_1"]]["value"]
            found.append((path.stem, role_id, resource, resources[config["scope"]]))
    return found


def test_exactly_the_six_roles_each_on_its_own_resource():
    found = {(stem, role_id, scope["type"]) for stem, role_id, _, scope in _assignments()}
    expected = {(stem, role_id, scope_type) for role_id, stem, scope_type in ROLES.values()}
    expected.add(("table", "custom:workspaceQueryRole", "Microsoft.OperationalInsights/workspaces"))
    assert found == expected
    assert len(_assignments()) == len(ROLES) + 1


@pytest.mark.parametrize("role", sorted(ROLES))
def test_role_id_and_assignment_shape(role):
    role_id, stem, _ = ROLES[role]
    assert re.fullmatch(r"[0-9a-f]{8}-([0-9a-f]{4}-){3}[0-9a-f]{12}", role_id)
    ((_, _, resource, _),) = [a for a in _assignments() if a[1] == role_id]
    properties = body(resource)["properties"]
    assert properties["principalType"] == "ServicePrincipal"
    scope, principal, role_var = body(resource)["name"]["function"]["parameters"].values()
    assert accessor_path(scope) == [body(resource)["scope"], "id"]
    assert principal == properties["principalId"]
    assert module(stem)["variables"][role_var]["value"] == role_id


def test_no_broad_role_anywhere():
    for path in sorted(INFRA.rglob("*.bicep")):
        text = path.read_text().lower()
        for role_id in TOO_BROAD:
            assert role_id not in text, f"{path.name} mentions a too-broad role {role_id}"


def test_table_read_roles_only_with_workspace_verification_which_is_on_by_default():
    """Without verification a crash between an accepted upload and the checkpoint save
    stores up to one batch twice, so verification (and its two roles) is the default."""
    table = module("table")
    for name in ("tableReader", "workspaceQuery", "workspaceQueryRole"):
        assert condition(table["resources"][name]) == "grantRead", name
    reader = body(parse(MAIN)["modules"]["table"])["params"]["readerPrincipalId"]["operator"]
    assert reader["type"] == "conditional"
    assert reader["operands"]["condition"] == "enableWorkspaceVerification"
    assert reader["operands"]["false_value"] == ""
    assert declared_params(parse(MAIN))["enableWorkspaceVerification"] is True


def test_workspace_query_role_runs_queries_but_reads_no_table():
    role = module("table")["resources"]["workspaceQueryRole"]
    assert role["type"] == "Microsoft.Authorization/roleDefinitions"
    properties = body(role)["properties"]
    assert properties["type"] == "CustomRole"
    (permissions,) = properties["permissions"]
    assert permissions["actions"] == WORKSPACE_QUERY_ACTIONS
    assert permissions["notActions"] == WORKSPACE_QUERY_NOT_ACTIONS
    assert permissions["dataActions"] == []
    (assignable,) = properties["assignableScopes"]
    operands = assignable["operator"]["operands"]
    assert operands["operand_1"]["function"]["type"] == "resource_group"
    assert operands["operand_2"] == "id"
    assignment = body(module("table")["resources"]["workspaceQuery"])
    assert assignment["scope"] == "workspace"
    assert assignment["properties"]["principalType"] == "ServicePrincipal"
    scope, principal, definition = assignment["name"]["function"]["parameters"].values()
    assert accessor_path(scope) == ["workspace", "id"]
    assert principal == "readerPrincipalId"
    assert accessor_path(definition) == ["workspaceQueryRole", "id"]


def test_key_vault_role_only_with_the_vault():
    assert condition(parse(MAIN)["modules"]["keyVault"]) == "deployKeyVault"
    vault = body(module("keyvault")["resources"]["vault"])["properties"]
    assert vault["enableRbacAuthorization"] is True
    assert vault["enablePurgeProtection"] is True


def test_graph_permission_ids():
    graph = parse(MODULES / "graph-permission.bicep")
    variables = {name: spec["value"] for name, spec in graph["variables"].items()}
    assert variables == {
        "microsoftGraphAppId": GRAPH_APP_ID,
        "messageTraceAppId": MESSAGE_TRACE_APP_ID,
        "exchangeMessageTraceReadAllRoleId": MESSAGE_TRACE_ROLE_ID,
        "domainReadAllRoleId": DOMAIN_READ_ROLE_ID,
    }
    resources = graph["resources"]
    assert resources["microsoftGraph"]["type"] == "Microsoft.Graph/servicePrincipals"
    assert resources["microsoftGraph"]["existing"] is True
    assert resources["messageTraceApp"]["type"] == "Microsoft.Graph/servicePrincipals"
    assert resources["messageTraceApp"]["existing"] is False
    grant = resources["messageTraceGrant"]
    assert grant["type"] == "Microsoft.Graph/appRoleAssignedTo"
    assert grant["api_version"] == "v1.0"
    assert body(grant)["appRoleId"] == "exchangeMessageTraceReadAllRoleId"
    assert body(grant)["principalId"] == "principalId"
    domains = resources["domainReadGrant"]
    assert domains["type"] == "Microsoft.Graph/appRoleAssignedTo"
    assert body(domains)["appRoleId"] == "domainReadAllRoleId"
    assert body(domains)["principalId"] == "principalId"
    principal = body(parse(MAIN)["modules"]["graphPermission"])["params"]["principalId"]
    assert principal["operator"]["operands"]["operand_1"] == "identity"


@pytest.mark.parametrize("script", ["grant-graph-permission.sh", "grant-graph-permission.ps1"])
def test_grant_scripts_use_the_same_ids(script):
    text = (INFRA / "scripts" / script).read_text()
    for value in (GRAPH_APP_ID, MESSAGE_TRACE_APP_ID, MESSAGE_TRACE_ROLE_ID, DOMAIN_READ_ROLE_ID):
        assert value in text
