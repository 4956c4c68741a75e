"""The Bicep templates parse, hang together and redeploy without changes."""

import json
import re

import pytest
from pycep import BicepParser

from tests.infra.bicep import (
    INFRA,
    MAIN,
    MODULES,
    bicep_files,
    body,
    condition,
    declared_params,
    decorator,
    leaves,
    loop,
    parse,
)

BICEP_FILES = bicep_files()
GRAPH_EXTENSION_REF = "br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:1.0.0"


def test_infra_has_the_expected_templates():
    names = {path.relative_to(INFRA).as_posix() for path in BICEP_FILES}
    assert names == {
        "main.bicep",
        "modules/alert.bicep",
        "modules/dcr.bicep",
        "modules/functionapp.bicep",
        "modules/graph-federation.bicep",
        "modules/graph-permission.bicep",
        "modules/identity.bicep",
        "modules/keyvault.bicep",
        "modules/monitoring.bicep",
        "modules/sentinel.bicep",
        "modules/sentinel-content.bicep",
        "modules/sentinel-connector.bicep",
        "modules/storage.bicep",
        "modules/table.bicep",
        "modules/tenant-checks.bicep",
        "modules/tenant-settings.bicep",
        "modules/tenant-workspace.bicep",
        "modules/workspace.bicep",
    }


@pytest.mark.parametrize("path", BICEP_FILES, ids=lambda p: p.relative_to(INFRA).as_posix())
def test_every_bicep_file_parses(path):
    parsed = parse(path)
    # tenant-checks and tenant-settings create nothing: they compute (and refuse) with outputs only.
    assert parsed.get("resources") or parsed.get("modules") or parsed.get("outputs"), (
        f"{path.name} declares nothing"
    )


def test_main_is_resource_group_scoped():
    assert parse(MAIN)["globals"]["scope"]["value"] == "resourceGroup"


def test_every_module_is_used_and_every_module_reference_resolves():
    referenced = set()
    for name, declaration in parse(MAIN)["modules"].items():
        path = (MAIN.parent / declaration["detail"]["path"]).resolve()
        assert path.is_file(), f"module {name} points at missing {path}"
        referenced.add(path)
    assert referenced == {path.resolve() for path in MODULES.glob("*.bicep")}


@pytest.mark.parametrize("name", sorted(parse(MAIN)["modules"]))
def test_module_parameters_match_the_module(name):
    declaration = parse(MAIN)["modules"][name]
    module = parse((MAIN.parent / declaration["detail"]["path"]).resolve())
    declared = declared_params(module)
    passed = set(body(declaration).get("params", {}))
    assert passed <= set(declared), f"{name}: passes undeclared {sorted(passed - set(declared))}"
    required = {param for param, default in declared.items() if default is None}
    assert required <= passed, f"{name}: misses required {sorted(required - passed)}"


def test_every_parameter_of_every_template_is_described():
    for path in BICEP_FILES:
        for name, spec in parse(path).get("parameters", {}).items():
            assert decorator(spec, "description"), f"{path.name}: parameter {name} has no @description"


# ----------------------------------------------------------------------------- idempotency


def test_no_time_or_random_values_anywhere():
    for path in BICEP_FILES:
        text = path.read_text()
        for token in ("utcNow(", "newGuid("):
            assert token not in text, f"{path.name} uses {token}: a redeploy would change something"


def test_names_come_from_a_resource_group_token():
    variables = parse(MAIN)["variables"]
    token = variables["token"]["value"]["function"]
    assert token["type"] == "to_lower"
    unique = token["parameters"]["string_to_change"]["function"]
    assert unique["type"] == "unique_string"
    assert unique["parameters"]["base_string"]["operator"]["operands"]["operand_1"]["function"]["type"] == (
        "resource_group"
    )
    for key, value in variables["names"]["value"].items():
        text = json.dumps(value)
        assert "token" in text, f"name {key} is not derived from the resource-group token"


def test_role_assignment_names_are_guids_of_scope_principal_and_role():
    found = 0
    for path in BICEP_FILES:
        for name, resource in parse(path).get("resources", {}).items():
            if resource["type"] != "Microsoft.Authorization/roleAssignments":
                continue
            found += 1
            function = body(resource)["name"]["function"]
            assert function["type"] == "guid", f"{path.name}:{name}"
            args = [json.dumps(arg) for arg in function["parameters"].values() if arg is not None]
            assert len(args) == 3, f"{path.name}:{name}: guid(scope.id, principal, role) expected"
    assert found == 6


def test_module_deployment_names_are_fixed():
    for name, declaration in parse(MAIN)["modules"].items():
        deployment_name = body(declaration)["name"]
        suffix = deployment_name.rsplit("-", 1)[1]
        collection = loop(declaration)
        if collection is None:
            assert deployment_name == f"mtc-${{baseName}}-{suffix}", name
        else:
            # One deployment per item, named by the item, not by its position in the list.
            item = collection["detail"]["item_name"]
            assert deployment_name == f"mtc-${{baseName}}-${{uniqueString({item})}}-{suffix}", name


# ----------------------------------------------------------------------------- Graph extension


def test_bicepconfig_declares_the_graph_extension():
    config = json.loads((INFRA / "bicepconfig.json").read_text())
    assert config["extensions"]["microsoftGraphV1"] == GRAPH_EXTENSION_REF


def test_graph_module_uses_the_extension_and_is_optional():
    graph = parse(MODULES / "graph-permission.bicep")
    assert "microsoftGraphV1" in graph["extensions"]
    declaration = parse(MAIN)["modules"]["graphPermission"]
    assert condition(declaration) == "grantGraphPermission"
    assert declared_params(parse(MAIN))["grantGraphPermission"] is False


def test_pycep_parses_the_extension_statement():
    """pycep-parser 0.7.1 reads `extension`; checkov's bundled 0.5.1 does not (infra/.checkov.yaml)."""
    assert BicepParser().parse(text="extension microsoftGraphV1\n")["extensions"] == {"microsoftGraphV1": {}}


# ----------------------------------------------------------------------------- main.bicepparam

BICEPPARAM = INFRA / "main.bicepparam"


def _bicepparam_assignments() -> dict[str, str]:
    assignments = {}
    for line in BICEPPARAM.read_text().splitlines():
        match = re.match(r"param (\w+) = (.+)$", line)
        if match:
            assignments[match.group(1)] = match.group(2)
    return assignments


def test_pycep_cannot_parse_bicepparam_files():
    """Why main.bicepparam is read line by line here: `using` is not in pycep's grammar."""
    with pytest.raises(Exception, match="using"):
        BicepParser().parse(file_path=BICEPPARAM)


def test_bicepparam_uses_main_and_sets_only_its_parameters():
    code = [
        line for line in BICEPPARAM.read_text().splitlines() if line.strip() and not line.startswith("//")
    ]
    assert code[0] == "using './main.bicep'"
    assert all(line.startswith(("using ", "param ")) for line in code), code
    params = declared_params(parse(MAIN))
    assignments = _bicepparam_assignments()
    assert set(assignments) <= set(params)
    required = {name for name, default in params.items() if default is None}
    assert required <= set(assignments), f"main.bicepparam misses {sorted(required - set(assignments))}"


def test_bicepparam_keeps_secrets_out():
    assignments = _bicepparam_assignments()
    secure = {name for name, spec in parse(MAIN)["parameters"].items() if decorator(spec, "secure")}
    assert secure == {"clientSecret", "subjectHashKey"}
    assert not secure & set(assignments)


# ----------------------------------------------------------------------------- azure.yaml


def test_azure_yaml_deploys_infra_and_the_function_app_together():
    text = (INFRA.parent / "azure.yaml").read_text()
    lines = {line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")}
    for expected in (
        "provider: bicep",
        "path: infra",
        "module: main",
        "project: .",
        "language: python",
        "host: function",
    ):
        assert expected in lines, expected
    service = re.search(r"^services:\n  (\w+):", text, re.MULTILINE)
    assert service is not None
    tags = body(parse(MAIN)["modules"]["functionApp"])["params"]["tags"]
    assert service.group(1) in list(leaves(tags)), "the function app must carry azd-service-name"
