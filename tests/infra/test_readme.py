"""infra/README.md documents every parameter of main.bicep and both deploy commands."""

import re

from tests.infra.bicep import INFRA, MAIN, parse

README = (INFRA / "README.md").read_text()


def test_parameter_table_lists_exactly_the_parameters_of_main():
    table = README.split("### Parameters", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE)
    assert sorted(documented) == sorted(parse(MAIN)["parameters"])
    assert len(documented) == len(set(documented))


def test_readme_shows_both_deploy_commands_and_the_checks_a_deployer_runs():
    for text in (
        "az deployment group create -g rg-msgtrace -f infra/main.bicep -p infra/main.bicepparam",
        "azd up",
        "az bicep build",
        "az deployment group what-if",
        "grant-graph-permission.sh",
        "grant-graph-permission.ps1",
        "0.36.1",
        "EmailEvents_CL",
        "LAQueryLogs",
    ):
        assert text in README, text


def test_every_infra_file_is_in_the_file_table():
    table = README.split("## Prerequisites", 1)[0]
    for path in sorted(INFRA.rglob("*")):
        if path.is_file() and path.suffix in {".bicep", ".bicepparam"}:
            assert f"`{path.relative_to(INFRA).as_posix()}`" in table, path.name


# Every resource provider a first deployment needs; Microsoft.App is the one Flex
# Consumption needs on a fresh subscription although the templates create no container app.
REQUIRED_PROVIDERS = (
    "Microsoft.Web",
    "Microsoft.App",
    "Microsoft.Storage",
    "Microsoft.OperationalInsights",
    "Microsoft.Insights",
    "Microsoft.ManagedIdentity",
    "Microsoft.SecurityInsights",
    "Microsoft.KeyVault",
)


def test_prerequisites_list_every_resource_provider_including_microsoft_app():
    prerequisites = README.split("## Prerequisites", 1)[1].split("\n## ", 1)[0]
    for provider in REQUIRED_PROVIDERS:
        assert f"`{provider}`" in prerequisites, provider


def _section(title: str) -> str:
    return README.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_first_deployment_checklist_runs_in_order():
    """Providers, then validate and what-if, then deploy, then the Graph grant, then the first run."""
    checklist = _section("First deployment, step by step")
    steps = [
        "Microsoft.App",
        "az provider register",
        "az deployment group validate",
        "az deployment group what-if",
        "az deployment group create",
        "grant-graph-permission.sh",
        "python -m connector check",
    ]
    positions = [checklist.find(step) for step in steps]
    assert -1 not in positions, [s for s, p in zip(steps, positions, strict=True) if p == -1]
    assert positions == sorted(positions), "the checklist steps are out of order"


def test_each_known_first_deployment_failure_is_told_apart():
    failures = _section("First deployment, step by step").split(
        "### Known first-deployment failures and how to tell them apart", 1
    )[1]
    for symptom in (
        "MissingSubscriptionRegistration",  # missing provider
        "FtpsState",  # Flex refuses FTPS
        "is already used",  # audit sink already used
        "Not a valid reference update",  # Graph grant replication delay
        "roleDefinitions/write",  # custom role needs more than RBAC Administrator
        "not propagated yet",  # role-assignment propagation
    ):
        assert symptom in failures, symptom


def test_readme_explains_the_defaults_that_depend_on_the_workspace():
    audit = _section("Query audit on an existing workspace")
    assert "off for an existing" in audit
    assert "on for a new one" in audit
    verification = _section("Workspace verification")
    for action in (
        "Microsoft.OperationalInsights/workspaces/read",
        "Microsoft.OperationalInsights/workspaces/query/read",
        "*Reader*",
    ):
        assert action in verification, action
    costs = _section("Costs that matter")
    assert "Microsoft Sentinel" in costs
    assert "`Trace`" in costs


def test_readme_explains_the_sentinel_content_its_gates_order_and_checks():
    content = _section("Sentinel content")
    for text in (
        "modules/sentinel-content.bicep",
        "tablePlan=Analytics",
        "deploySentinelContent",
        "deployParsers",
        "data row",
        "MessageTrace` → `vimEmailEventMicrosoftMessageTrace",
        "az bicep build",
        "az deployment group what-if",
        "T1566.002",
    ):
        assert text in content, text
    failures = _section("First deployment, step by step")
    for symptom in (
        "One of the tables does not exist",
        "Failed to resolve table or column expression",
        "Failed to resolve scalar expression named 'MessageTrace'",
        "_GetWatchlist('LookalikeDomains')",
        "not onboarded to Microsoft Sentinel",
    ):
        assert symptom in failures, symptom
