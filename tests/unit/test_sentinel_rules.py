"""Each analytic rule file is complete in Azure-Sentinel's format and consistent with itself.

Why: Sentinel refuses a rule with a missing field or an entity mapped to a column its
query does not return only when the deployment reaches it, and silently drops a custom
detail whose column is absent. These checks read the YAML and, for the columns, the
result type Microsoft's parser (Kusto.Language) infers for each query.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests import kql
from tests.infra.test_sentinel_content import API_SEVERITIES, API_TACTICS

RULES = sorted((kql.SENTINEL / "Analytic Rules").glob("*.yaml"))
# Azure-Sentinel's scheduled rule template (Azure/Azure-Sentinel .script/tests/detectionTemplateSchemaValidation,
# "Detections/README"): fields every scheduled rule file carries.
REQUIRED = [
    "id",
    "name",
    "description",
    "severity",
    "requiredDataConnectors",
    "queryFrequency",
    "queryPeriod",
    "triggerOperator",
    "triggerThreshold",
    "tactics",
    "relevantTechniques",
    "query",
    "entityMappings",
    "version",
    "kind",
]
OPERATORS = {"gt", "lt", "eq", "ne"}
# Entity identifiers Sentinel accepts for the entities the rules map (learn: entities reference).
IDENTIFIERS = {
    "Mailbox": {"MailboxPrimaryAddress", "DisplayName", "Upn", "ExternalDirectoryObjectId", "RiskLevel"},
    "Account": {
        "Name",
        "FullName",
        "NTDomain",
        "DnsDomain",
        "UPNSuffix",
        "Sid",
        "AadTenantId",
        "AadUserId",
        "PUID",
        "IsDomainJoined",
        "DisplayName",
        "ObjectGuid",
    },
    "IP": {"Address"},
    "DNS": {"DomainName"},
    # The connector itself (the health rule): no Azure resource id is in its rows.
    "CloudApplication": {"AppId", "Name", "InstanceName"},
}
MAX_QUERY_PERIOD = timedelta(days=14)  # Sentinel's limit for scheduled rules
_DURATION = re.compile(r"^(\d+)([mhd])$")


def duration(text: str) -> timedelta:
    match = _DURATION.match(text)
    assert match, f"duration {text!r} is not <number><m|h|d>"
    return timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[match.group(2)]: int(match.group(1))})


def load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def result_columns() -> dict[str, dict[str, str]]:
    texts = [kql.KqlText(path.stem, load(path)["query"]) for path in RULES]
    return kql.analyze_columns(texts)


def test_there_are_rules_and_their_ids_are_unique_guids():
    ids = [load(path)["id"] for path in RULES]

    assert len(RULES) >= 6
    assert [str(uuid.UUID(i)) for i in ids] == ids
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("path", RULES, ids=[p.stem for p in RULES])
def test_rule_has_the_azure_sentinel_fields_with_valid_values(path):
    rule = load(path)

    assert [name for name in REQUIRED if name not in rule] == []
    assert rule["kind"] == "Scheduled"
    assert rule["severity"] in API_SEVERITIES
    assert rule["triggerOperator"] in OPERATORS
    assert isinstance(rule["triggerThreshold"], int)
    assert set(rule["tactics"]) <= API_TACTICS
    assert all(re.fullmatch(r"T\d{4}", t) for t in rule["relevantTechniques"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(rule["version"]))
    # Mail rules read EmailEvents_CL; the health rule the connector's health table.
    assert [c["dataTypes"] for c in rule["requiredDataConnectors"]] in (
        [["EmailEvents_CL"]],
        [["MessageTraceHealth_CL"]],
    )
    tables = set(re.findall(r"\b(\w+_CL)\b", rule["query"]))
    assert tables == set(rule["requiredDataConnectors"][0]["dataTypes"])
    assert duration(rule["queryFrequency"]) <= duration(rule["queryPeriod"]) <= MAX_QUERY_PERIOD


@pytest.mark.parametrize("path", RULES, ids=[p.stem for p in RULES])
def test_rule_maps_entities_and_details_to_columns_its_query_returns(path, result_columns):
    rule, columns = load(path), result_columns[path.stem]
    mapped = [
        (mapping["entityType"], field["identifier"], field["columnName"])
        for mapping in rule["entityMappings"]
        for field in mapping["fieldMappings"]
    ]
    placeholders = re.findall(r"\{\{(\w+)\}\}", yaml.safe_dump(rule.get("alertDetailsOverride", {})))

    assert mapped
    assert [(e, i) for e, i, _ in mapped if i not in IDENTIFIERS.get(e, set())] == []
    assert [c for _, _, c in mapped if c not in columns] == []
    assert [c for c in rule.get("customDetails", {}).values() if c not in columns] == []
    assert [p for p in placeholders if p not in columns] == []


@pytest.mark.parametrize("path", RULES, ids=[p.stem for p in RULES])
def test_rule_thresholds_are_documented_parameters_and_its_window_matches_its_schedule(path):
    """Every ``let Name = value; // why`` at the top is a parameter the description names."""
    rule = load(path)
    parameters = re.findall(r"^let (\w+) = ([^;]+);[ \t]*//[ \t]*\S", rule["query"], re.M)
    scalar = {name: value for name, value in parameters}

    assert scalar, "a rule's thresholds are let parameters with a comment, at the top"
    assert [name for name in scalar if name not in rule["description"]] == []
    assert scalar.get("LookBack") == rule["queryFrequency"]
    assert "ingestion_time()" in rule["query"], "rules select what arrived since their last run"


def test_the_readme_names_only_content_that_ships():
    """The analyst walkthrough sends readers to rules and queries by name: each must exist."""
    readme = (kql.ROOT / "README.md").read_text(encoding="utf-8")
    named = {" ".join(name.split()) for name in re.findall(r"\*\*(Message trace - [^*]+)\*\*", readme)}
    shipped = {
        load(path)["name"]
        for folder in ("Analytic Rules", "Hunting Queries")
        for path in (kql.SENTINEL / folder).glob("*.yaml")
    }
    shipped_lower = {name.lower() for name in shipped}

    assert len(named) >= 3
    assert [name for name in named if name.lower() not in shipped_lower] == []
