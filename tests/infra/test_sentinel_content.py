"""infra/modules/sentinel-content.bicep deploys every content file of infra/sentinel/, and maps every field.

The content files are in the Azure/Azure-Sentinel repository's formats (YAML rules, hunting
queries and parsers, workbook gallery JSON, watchlist CSV); the module loads each one by
name and maps its fields to the API's property names. These tests read the module's
source and the content files and check, without Azure:

* every content file is loaded and every loaded path exists;
* every field a file uses is read by the module (``rule.queryFrequency``) or is listed in
  ``CONTENT_METADATA_ONLY`` with its reason, a list mirrored in the module's header comment;
* every value the module converts is convertible (trigger operators, durations,
  techniques, enumerations the API accepts);
* the property names the module writes are the API's;
* the gates: rules only on the Analytics plan and with Sentinel, the watchlist only with
  data rows, the rule reading it only with it, parsers before what calls them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.bicep import INFRA, MAIN, MODULES, body, condition, parse

MODULE = MODULES / "sentinel-content.bicep"
CONTENT = INFRA / "sentinel"
CONTENT_SUFFIXES = {".yaml", ".yml", ".json", ".csv"}

# Which content variable of the module holds which kind of file.
KIND_OF_VARIABLE = {
    "analyticRules": "rule",
    "huntingQueries": "hunting",
    "messageTraceParser": "parser",
    "vimParser": "asim",
    "asimParser": "asim",
}

# Fields the files carry that are deliberately not deployed, with the reason. The one place
# this list lives; the module's header comment mirrors it (test below). Paths are dotted.
CONTENT_METADATA_ONLY: dict[str, dict[str, str]] = {
    "rule": {
        "requiredDataConnectors": "Azure-Sentinel catalogue metadata; the alertRules API has no such property",
        "status": "Azure-Sentinel catalogue state (Available); not an alertRules property",
        "version": "the API's templateVersion describes the gallery template a rule was created from "
        "(with alertRuleTemplateName); these rules are deployed directly, and a redeploy updates them in place",
        "kind": "always Scheduled, written by the module as the resource kind",
    },
    "hunting": {
        "requiredDataConnectors": "catalogue metadata; savedSearches have no such property",
        "entityMappings": "savedSearches have no entity mappings; Sentinel's hunting page maps entities itself",
        "version": "content version; savedSearches' version is the query language version (2)",
        "kind": "catalogue metadata",
        "description-detailed": "catalogue text; the description tag carries the description",
    },
    "parser": {
        "Function.Version": "parser metadata, not a savedSearches property",
        "Function.LastUpdated": "parser metadata, not a savedSearches property",
        "FunctionName": "the function is called by its FunctionAlias, which is deployed",
        "Description": "savedSearches have no description property",
    },
    "asim": {
        "Parser.Version": "parser metadata, not a savedSearches property",
        "Parser.LastUpdated": "parser metadata, not a savedSearches property",
        "Product": "ASIM catalogue metadata",
        "Normalization": "ASIM catalogue metadata (schema and version)",
        "References": "documentation links",
        "Description": "savedSearches have no description property",
    },
}

# Nested structures the module passes through unchanged: their keys must be the API's.
# Property names from Azure/bicep-types-az, generated/securityinsights/
# microsoft.securityinsights/2025-09-01/types.md
# (https://github.com/Azure/bicep-types-az/blob/main/generated/securityinsights/microsoft.securityinsights/2025-09-01/types.md)
API_ENTITY_MAPPING = {"entityType", "fieldMappings"}
API_FIELD_MAPPING = {"identifier", "columnName"}
API_ALERT_DETAILS_OVERRIDE = {
    "alertDisplayNameFormat",
    "alertDescriptionFormat",
    "alertDynamicProperties",
    "alertSeverityColumnName",
    "alertTacticsColumnName",
}
API_EVENT_GROUPING = {"aggregationKind"}
PASSED_THROUGH = {
    "entityMappings": None,  # checked item by item below
    "customDetails": None,  # a map of alert field -> column
    "alertDetailsOverride": API_ALERT_DETAILS_OVERRIDE,
    "eventGroupingSettings": API_EVENT_GROUPING,
}

# Writable properties per resource type (same source; operationalinsights 2026-03-01
# SavedSearchProperties, applicationinsights 2023-06-01 WorkbookProperties).
API_PROPERTIES = {
    "Microsoft.SecurityInsights/alertRules": {
        "alertDetailsOverride",
        "alertRuleTemplateName",
        "customDetails",
        "description",
        "displayName",
        "enabled",
        "entityMappings",
        "eventGroupingSettings",
        "incidentConfiguration",
        "query",
        "queryFrequency",
        "queryPeriod",
        "severity",
        "suppressionDuration",
        "suppressionEnabled",
        "tactics",
        "techniques",
        "templateVersion",
        "triggerOperator",
        "triggerThreshold",
    },
    "Microsoft.SecurityInsights/watchlists": {
        "contentType",
        "defaultDuration",
        "description",
        "displayName",
        "itemsSearchKey",
        "labels",
        "numberOfLinesToSkip",
        "provider",
        "rawContent",
        "source",
        "sourceType",
        "watchlistAlias",
    },
    "Microsoft.OperationalInsights/workspaces/savedSearches": {
        "category",
        "displayName",
        "functionAlias",
        "functionParameters",
        "query",
        "tags",
        "version",
    },
    "Microsoft.Insights/workbooks": {
        "category",
        "description",
        "displayName",
        "serializedData",
        "sourceId",
        "storageUri",
        "version",
    },
}
API_REQUIRED = {
    "Microsoft.SecurityInsights/alertRules": {
        "displayName",
        "enabled",
        "suppressionDuration",
        "suppressionEnabled",
    },
    "Microsoft.SecurityInsights/watchlists": {"displayName", "itemsSearchKey", "provider"},
    "Microsoft.OperationalInsights/workspaces/savedSearches": {"category", "displayName", "query"},
    "Microsoft.Insights/workbooks": {"category", "displayName", "serializedData"},
}
API_INCIDENT_CONFIGURATION = {"createIncident", "groupingConfiguration"}
API_GROUPING_CONFIGURATION = {
    "enabled",
    "reopenClosedIncident",
    "lookbackDuration",
    "matchingMethod",
    "groupByEntities",
    "groupByAlertDetails",
    "groupByCustomDetails",
}
API_GROUPING_REQUIRED = {"enabled", "reopenClosedIncident", "lookbackDuration", "matchingMethod"}
API_SEVERITIES = {"High", "Medium", "Low", "Informational"}
API_TACTICS = {
    "Collection",
    "CommandAndControl",
    "CredentialAccess",
    "DefenseEvasion",
    "Discovery",
    "Execution",
    "Exfiltration",
    "Impact",
    "ImpairProcessControl",
    "InhibitResponseFunction",
    "InitialAccess",
    "LateralMovement",
    "Persistence",
    "PreAttack",
    "PrivilegeEscalation",
    "Reconnaissance",
    "ResourceDevelopment",
}
API_ENTITY_TYPES = {
    "Account",
    "AzureResource",
    "CloudApplication",
    "DNS",
    "File",
    "FileHash",
    "Host",
    "IP",
    "MailCluster",
    "MailMessage",
    "Mailbox",
    "Malware",
    "Process",
    "RegistryKey",
    "RegistryValue",
    "SecurityGroup",
    "SubmissionMail",
    "URL",
}
API_AGGREGATION_KINDS = {"AlertPerResult", "SingleAlert"}
API_MATCHING_METHODS = {"AllEntities", "AnyAlert", "Selected"}
KQL_PARAMETER_TYPES = {
    "bool",
    "datetime",
    "dynamic",
    "guid",
    "int",
    "long",
    "real",
    "string",
    "timespan",
    "decimal",
}

# The duration forms the module's expression converts: 30m, 1h, 14d (to PT30M, PT1H,
# P14D), or ISO 8601 already (kept). Sentinel runs a rule every 5 minutes to 14 days and
# looks back 5 minutes to 14 days.
SHORT_DURATION = re.compile(r"^(\d+)([mhd])$")
ISO_DURATION = re.compile(r"^P(?:(\d+)D|T(?:(\d+)H)?(?:(\d+)M)?)$")
TECHNIQUE = re.compile(r"^T\d{4}(\.\d{3})?$")
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

_LOAD = re.compile(r"load(Yaml|Json|Text)Content\('([^']+)'\)")
_VAR_LINE = re.compile(r"^var (\w+) = ")
_CHAIN = re.compile(r"\b([A-Za-z_]\w*)((?:\.\??[A-Za-z_][\w-]*)+)")
_LOOP = re.compile(r"\bfor\s+(?:\((\w+),\s*\w+\)|(\w+))\s+in\s+([A-Za-z_][\w.?]*)")


# ----------------------------------------------------------------------------- reading the module


def _source() -> str:
    return MODULE.read_text()


def _code() -> str:
    """The module without full-line comments (the metadata mirror is a comment)."""
    return "\n".join(line for line in _source().splitlines() if not line.lstrip().startswith("//"))


def _loads_by_variable() -> dict[str, list[Path]]:
    """Content variable -> the files it loads, in order."""
    loads: dict[str, list[Path]] = {}
    current = None
    for line in _code().splitlines():
        match = _VAR_LINE.match(line)
        if match:
            current = match.group(1)
        elif not line.startswith((" ", "]")):
            current = None
        for _, path in _LOAD.findall(line):
            assert current is not None, f"a load outside a variable: {line.strip()}"
            loads.setdefault(current, []).append((MODULES / path).resolve())
    return loads


def _loops() -> list[tuple[str, str, tuple[str, ...]]]:
    """Every loop over content: (loop variable, content variable, path of the iterated list).

    The path is ``()`` for a loop over a content variable (its items are whole files).
    """
    loops: list[tuple[str, str, tuple[str, ...]]] = []
    for tuple_item, item, source in _LOOP.findall(_code()):
        name = tuple_item or item
        root, *rest = source.replace("?", "").split(".")
        if root in KIND_OF_VARIABLE:
            loops.append((name, root, tuple(rest)))
        else:
            for alias, variable, base in list(loops):
                if alias == root:
                    loops.append((name, variable, _item(base) + tuple(rest)))
    return loops


def _item(path: tuple[str, ...]) -> tuple[str, ...]:
    """The path of one item of the list at ``path`` (a file itself for ``()``)."""
    return path + ("[]",) if path else ()


def _accessed_paths() -> dict[str, set[tuple[str, ...]]]:
    """Content variable -> every path the module reads below a file's root.

    A list the module loops over is not read whole: its items are, through the loop
    variable (``for p in messageTraceParser.FunctionParams`` reads ``p.Name``, ...).
    """
    loops = _loops()
    accessed: dict[str, set[tuple[str, ...]]] = {variable: set() for variable in KIND_OF_VARIABLE}
    for root, chain in _CHAIN.findall(_code()):
        parts = tuple(part for part in chain.replace("?", "").split(".") if part)
        if root in KIND_OF_VARIABLE:
            accessed[root].add(parts)
        for alias, variable, base in loops:
            if alias == root:
                accessed[variable].add(_item(base) + parts)
    for _, variable, base in loops:
        if base:
            accessed[variable].discard(base)
            accessed[variable].add(_item(base))
    return accessed


def _is_read(path: tuple[str, ...], accessed: set[tuple[str, ...]]) -> str | None:
    """'leaf' when the module reads exactly this path, 'deeper' when it reads below it."""
    if path in accessed:
        return "leaf"
    if any(candidate[: len(path)] == path for candidate in accessed):
        return "deeper"
    return None


# ----------------------------------------------------------------------------- the content files


def _content_files() -> list[Path]:
    return sorted(
        path.resolve() for path in CONTENT.rglob("*") if path.is_file() and path.suffix in CONTENT_SUFFIXES
    )


def _files_of(kind: str) -> Iterator[tuple[str, Path, dict[str, Any]]]:
    for variable, paths in _loads_by_variable().items():
        if KIND_OF_VARIABLE.get(variable) == kind:
            for path in paths:
                yield variable, path, yaml.safe_load(path.read_text())


def _rules() -> list[dict[str, Any]]:
    return [content for _, _, content in _files_of("rule")]


def _label(path: Path) -> str:
    return path.relative_to(CONTENT).as_posix()


def _unmapped(
    node: Any, path: tuple[str, ...], accessed: set[tuple[str, ...]], metadata: dict[str, str]
) -> Iterator[str]:
    """Every field below ``path`` that is neither read by the module nor metadata-only."""
    if isinstance(node, list):
        for item in node:
            yield from _unmapped(item, path + ("[]",), accessed, metadata)
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        child = path + (str(key),)
        dotted = ".".join(part for part in child if part != "[]")
        if dotted in metadata:
            continue
        read = _is_read(child, accessed)
        if read is None:
            yield dotted
        elif read == "deeper":
            yield from _unmapped(value, child, accessed, metadata)
        elif dotted in PASSED_THROUGH:
            yield from _passed_through_keys(dotted, value)


def _passed_through_keys(field: str, value: Any) -> Iterator[str]:
    """Keys inside a structure handed to the API unchanged that the API does not know."""
    if field == "entityMappings":
        for mapping in value:
            yield from (f"entityMappings.{key}" for key in set(mapping) - API_ENTITY_MAPPING)
            for field_mapping in mapping.get("fieldMappings", []):
                yield from (
                    f"entityMappings.fieldMappings.{key}" for key in set(field_mapping) - API_FIELD_MAPPING
                )
    elif field == "customDetails":
        yield from (f"customDetails.{key}" for key, column in value.items() if not isinstance(column, str))
    else:
        allowed = PASSED_THROUGH[field] or set()
        yield from (f"{field}.{key}" for key in set(value) - allowed)


# ----------------------------------------------------------------------------- files and paths


def test_every_content_file_is_loaded_by_the_module():
    """The data connector card is loaded by its own module, sentinel-connector.bicep."""
    loaded = {path for paths in _loads_by_variable().values() for path in paths}
    connector_module = (MODULES / "sentinel-connector.bicep").read_text()
    loaded |= {(MODULES / path).resolve() for _, path in _LOAD.findall(connector_module)}
    missing = [_label(path) for path in _content_files() if path not in loaded]
    assert missing == [], f"infra/sentinel files the module does not deploy: {missing}"


def test_every_path_the_module_loads_exists():
    absent = [
        path.relative_to(INFRA).as_posix()
        for paths in _loads_by_variable().values()
        for path in paths
        if not path.is_file()
    ]
    assert absent == [], f"sentinel-content.bicep loads files that do not exist: {absent}"


def test_each_content_variable_loads_the_files_of_its_kind():
    loads = _loads_by_variable()
    assert set(KIND_OF_VARIABLE) <= set(loads)
    folders = {"rule": "Analytic Rules", "hunting": "Hunting Queries", "parser": "Parsers", "asim": "Parsers"}
    for variable, kind in KIND_OF_VARIABLE.items():
        for path in loads[variable]:
            assert path.parent.name == folders[kind], f"{variable} loads {path}"
    assert [p.name for p in loads["workbookData"]] == ["MessageTrace.json"]
    assert [p.name for p in loads["lookalikeCsv"]] == ["LookalikeDomains.csv"]


# ----------------------------------------------------------------------------- every field is mapped


@pytest.mark.parametrize("kind", sorted(CONTENT_METADATA_ONLY))
def test_every_field_the_files_use_is_mapped_or_metadata_only(kind):
    accessed = _accessed_paths()
    problems = []
    files = list(_files_of(kind))
    assert files, f"no {kind} file is loaded"
    for variable, path, content in files:
        assert isinstance(content, dict), f"{_label(path)} is not a YAML mapping"
        for field in _unmapped(content, (), accessed[variable], CONTENT_METADATA_ONLY[kind]):
            problems.append(f"{_label(path)}: {field}")
    assert problems == [], (
        "fields neither mapped by sentinel-content.bicep nor listed in CONTENT_METADATA_ONLY: "
        + ", ".join(problems)
    )


def test_the_metadata_only_list_is_mirrored_in_the_module_comment():
    header = _source().split("// API versions", 1)[0]
    mirrored: dict[str, set[str]] = {}
    for kind, fields in re.findall(r"^//\s+(\w+) metadata: (.+)$", header, re.MULTILINE):
        mirrored[kind] = {field.strip() for field in fields.split(",")}
    assert mirrored == {kind: set(fields) for kind, fields in CONTENT_METADATA_ONLY.items()}


def test_the_field_finder_sees_a_field_the_module_does_not_read():
    """The check above is not vacuous: an unknown field is reported."""
    accessed = _accessed_paths()["analyticRules"]
    rule = {"name": "x", "notAField": 1, "incidentConfiguration": {"createIncident": True, "bogus": 1}}
    assert sorted(_unmapped(rule, (), accessed, CONTENT_METADATA_ONLY["rule"])) == [
        "incidentConfiguration.bogus",
        "notAField",
    ]
    assert list(_unmapped({"entityMappings": [{"entityType": "IP", "x": 1}]}, (), accessed, {})) == [
        "entityMappings.x"
    ]


# ----------------------------------------------------------------------------- convertible values


def test_every_trigger_operator_is_a_key_of_the_module_lookup():
    lookup = parse(MODULE)["variables"]["triggerOperators"]["value"]
    assert set(lookup.values()) == {"GreaterThan", "LessThan", "Equal", "NotEqual"}
    for rule in _rules():
        assert rule["triggerOperator"] in lookup, (
            f"{rule['name']}: triggerOperator {rule['triggerOperator']!r}"
        )


def _minutes(duration: str) -> int:
    short = SHORT_DURATION.match(duration)
    if short:
        return int(short.group(1)) * {"m": 1, "h": 60, "d": 1440}[short.group(2)]
    iso = ISO_DURATION.match(duration)
    assert iso, f"duration {duration!r} is neither 30m/1h/14d nor ISO 8601 (PT1H, P1D)"
    days, hours, minutes = (int(part or 0) for part in iso.groups())
    assert days or hours or minutes, duration
    return days * 1440 + hours * 60 + minutes


def test_every_duration_has_a_form_the_module_converts_and_a_range_sentinel_accepts():
    for rule in _rules():
        frequency = _minutes(str(rule["queryFrequency"]))
        period = _minutes(str(rule["queryPeriod"]))
        assert 5 <= frequency <= 14 * 1440, f"{rule['name']}: queryFrequency {rule['queryFrequency']}"
        assert 5 <= period <= 14 * 1440, f"{rule['name']}: queryPeriod {rule['queryPeriod']}"
        grouping = rule.get("incidentConfiguration", {}).get("groupingConfiguration", {})
        if "lookbackDuration" in grouping:
            lookback = _minutes(str(grouping["lookbackDuration"]))
            assert 5 <= lookback <= 7 * 1440, (
                f"{rule['name']}: lookbackDuration {grouping['lookbackDuration']}"
            )


def test_the_module_converts_short_durations_with_the_expression_the_test_assumes():
    code = _code()
    for field in ("rule.queryFrequency", "rule.queryPeriod", "ruleLookbacks[i]"):
        assert (
            f"startsWith({field}, 'P') ? {field} : concat(endsWith({field}, 'd') ? 'P' : 'PT', toUpper({field}))"
        ) in code, field


def test_every_technique_maps_to_one_distinct_api_technique():
    """2025-09-01 has `techniques` (T####) only: T1566.002 is deployed as T1566."""
    for rule in _rules():
        techniques = rule.get("relevantTechniques", [])
        for technique in techniques:
            assert TECHNIQUE.match(technique), f"{rule['name']}: technique {technique!r}"
        parents = [technique.split(".")[0] for technique in techniques]
        assert len(parents) == len(set(parents)), (
            f"{rule['name']}: {techniques} map to duplicate techniques {parents}; list either a "
            "technique or its sub-technique (alertRules 2025-09-01 has no subTechniques)"
        )
    assert "split(technique, '.')[0]" in _code()


def test_every_enumerated_value_is_one_the_api_accepts():
    for rule in _rules():
        name = rule["name"]
        assert rule["severity"] in API_SEVERITIES, name
        assert set(rule.get("tactics", [])) <= API_TACTICS, name
        assert isinstance(rule["triggerThreshold"], int), name
        assert rule.get("kind", "Scheduled") == "Scheduled", name
        for mapping in rule.get("entityMappings", []):
            assert mapping["entityType"] in API_ENTITY_TYPES, name
            assert mapping["fieldMappings"], name
        if "eventGroupingSettings" in rule:
            assert rule["eventGroupingSettings"]["aggregationKind"] in API_AGGREGATION_KINDS, name
        grouping = rule.get("incidentConfiguration", {}).get("groupingConfiguration", {})
        if "matchingMethod" in grouping:
            assert grouping["matchingMethod"] in API_MATCHING_METHODS, name
        assert set(grouping.get("groupByEntities", [])) <= {
            m["entityType"] for m in rule.get("entityMappings", [])
        }
        assert set(grouping.get("groupByCustomDetails", [])) <= set(rule.get("customDetails", {})), name
    for _, path, query in _files_of("hunting"):
        assert set(query.get("tactics", [])) <= API_TACTICS, _label(path)
        for technique in query.get("relevantTechniques", []):
            assert TECHNIQUE.match(technique), _label(path)


def test_resource_names_come_from_unique_file_ids():
    ids = []
    for kind in ("rule", "hunting"):
        for _, path, content in _files_of(kind):
            assert GUID.match(str(content["id"])), f"{_label(path)}: id {content['id']!r} is not a GUID"
            ids.append(str(content["id"]))
    for _, path, content in _files_of("parser"):
        assert GUID.match(str(content["id"])), _label(path)
        ids.append(str(content["id"]))
    assert len(ids) == len(set(ids)), "two content files share an id"
    code = _code()
    assert "name: rule.id" in code
    assert "name: query.id" in code
    assert "name: messageTraceParser.id" in code


def test_parser_parameters_have_kql_types_and_become_function_parameters():
    for kind, key in (("parser", "FunctionParams"), ("asim", "ParserParams")):
        for _, path, parser in _files_of(kind):
            for param in parser.get(key, []):
                assert set(param) == {"Name", "Type", "Default"}, _label(path)
                assert param["Type"] in KQL_PARAMETER_TYPES, f"{_label(path)}: {param}"
    template = (
        "p.Type == 'string' ? '${p.Name}:${p.Type}=\\'${p.Default}\\'' : '${p.Name}:${p.Type}=${p.Default}'"
    )
    assert _code().count(template) == 3


# ----------------------------------------------------------------------------- API property names


def _loop_body(resource: dict[str, Any]) -> dict[str, Any]:
    config = resource["config"]
    if "loop_type" in config:
        config = config["config"]
        if set(config) == {"condition", "config"}:
            config = config["config"]
        return dict(config)
    return body(resource)


def test_every_property_the_module_writes_is_the_apis():
    resources = parse(MODULE)["resources"]
    for name, resource in resources.items():
        if resource.get("existing"):
            continue
        resource_type = resource["type"]
        properties = set(_loop_body(resource)["properties"])
        assert properties <= API_PROPERTIES[resource_type], (
            f"{name}: {properties - API_PROPERTIES[resource_type]}"
        )
        assert API_REQUIRED[resource_type] <= properties, (
            f"{name}: misses {API_REQUIRED[resource_type] - properties}"
        )
    rule = _loop_body(resources["rules"])
    assert rule["kind"] == "Scheduled"
    incident = rule["properties"]["incidentConfiguration"]
    assert set(incident) == API_INCIDENT_CONFIGURATION
    grouping = incident["groupingConfiguration"]
    assert API_GROUPING_REQUIRED <= set(grouping) <= API_GROUPING_CONFIGURATION
    for tag in _loop_body(resources["hunting"])["properties"]["tags"]:
        assert set(tag) == {"name", "value"}


def test_api_versions_are_the_newest_stable_ones_cited_in_the_module():
    versions = {resource["type"]: resource["api_version"] for resource in parse(MODULE)["resources"].values()}
    assert versions["Microsoft.SecurityInsights/alertRules"] == "2025-09-01"
    assert versions["Microsoft.SecurityInsights/watchlists"] == "2025-09-01"
    assert versions["Microsoft.OperationalInsights/workspaces/savedSearches"] == "2026-03-01"
    assert versions["Microsoft.Insights/workbooks"] == "2023-06-01"
    header = _source().split("@description", 1)[0]
    for version in ("2025-09-01", "2026-03-01", "2023-06-01"):
        assert version in header


def test_hunting_queries_are_tagged_like_azure_sentinel_solution_packages():
    hunting = _loop_body(parse(MODULE)["resources"]["hunting"])["properties"]
    assert hunting["category"] == "Hunting Queries"
    assert hunting["version"] == 2
    assert [tag["name"] for tag in hunting["tags"]] == ["description", "tactics", "techniques"]


def test_the_workbook_is_a_sentinel_workbook_of_the_workspace():
    workbook = parse(MODULE)["resources"]["workbook"]
    config = body(workbook)
    assert config["kind"] == "shared"
    assert config["name"]["function"]["type"] == "guid"
    assert config["properties"]["category"] == "sentinel"
    data = json.loads(next(p for p in _loads_by_variable()["workbookData"]).read_text())
    assert data["version"] == "Notebook/1.0", "workbook gallery JSON (serializedData) starts with its version"


# ----------------------------------------------------------------------------- gates and order


def test_parsers_deploy_in_call_order():
    resources = parse(MODULE)["resources"]
    assert body(resources["vimFunction"])["dependsOn"] == ["messageTraceFunction"]
    assert body(resources["asimFunction"])["dependsOn"] == ["vimFunction"]
    code = _code()
    assert "functionAlias: vimParser.ParserName" in code
    assert "functionAlias: asimParser.ParserName" in code
    assert "functionAlias: messageTraceParser.FunctionAlias" in code


def test_rules_need_the_parsers_and_a_rule_reading_the_watchlist_needs_the_watchlist():
    resources = parse(MODULE)["resources"]
    depends = set(_loop_body(resources["rules"])["dependsOn"])
    assert {"messageTraceFunction", "vimFunction", "asimFunction", "lookalikeWatchlist"} <= depends
    rule_condition = json.dumps(resources["rules"]["config"]["condition"])
    for term in ("deployAnalyticRules", "deployWatchlist", "_GetWatchlist"):
        assert term in rule_condition, term
    assert condition(resources["lookalikeWatchlist"]) == "deployWatchlist"
    readers = [rule for rule in _rules() if "_GetWatchlist" in rule["query"]]
    assert [rule["name"] for rule in readers] == [
        rule["name"] for rule in _rules() if "_GetWatchlist('LookalikeDomains')" in rule["query"]
    ]
    assert readers, "the InboundFromLookalikeDomain rule reads _GetWatchlist('LookalikeDomains')"


def test_the_watchlist_deploys_only_with_a_data_row_and_is_keyed_by_a_csv_column():
    code = _code()
    assert (
        "var lookalikeRows = length(filter(split(lookalikeCsv, '\\n'), line => !empty(trim(line)))) - 1"
        in code
    )
    assert "var deployWatchlist = deploySentinelItems && lookalikeRows > 0" in code
    watchlist = body(parse(MODULE)["resources"]["lookalikeWatchlist"])
    assert watchlist["name"] == watchlist["properties"]["watchlistAlias"] == "LookalikeDomains"
    assert watchlist["properties"]["sourceType"] == "Local"  # "Local file" is refused (Azure/azure-cli#26332)
    assert watchlist["properties"]["numberOfLinesToSkip"] == 0
    header = next(p for p in _loads_by_variable()["lookalikeCsv"]).read_text().splitlines()[0]
    assert watchlist["properties"]["itemsSearchKey"] in header.split(",")


def test_main_gates_the_content_on_sentinel_and_the_rules_on_the_analytics_plan():
    declaration = parse(MAIN)["modules"]["sentinelContent"]
    config = body(declaration)
    params = config["params"]
    rules_gate = json.dumps(params["deployAnalyticRules"])
    for term in ("deploySentinelContent", "tablePlan", "Analytics"):
        assert term in rules_gate, term
    assert params["deploySentinelItems"] == "deploySentinelContent"
    # The health rule and the workbook's health tab read MessageTraceHealth_CL: it must exist first.
    assert set(config["dependsOn"]) == {"table", "healthTable", "detailTable", "sentinel"}
    table_scope = body(parse(MAIN)["modules"]["table"])["scope"]
    assert config["scope"] == table_scope, "content lives where the workspace lives"
    defaults = {name: spec.get("default") for name, spec in parse(MAIN)["parameters"].items()}
    assert defaults["deploySentinelContent"] == "enableSentinel"
    assert defaults["deployParsers"] is True
    assert json.dumps(condition(declaration)).count("deploy") == 2
