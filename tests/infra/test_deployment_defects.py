"""What Azure refused or would refuse on a first real deployment (issue 10, defects 1-8).

Each test pins one fix so the defect cannot come back: properties Flex Consumption
rejects, parameter ranges Azure enforces, name lengths, and the defaults that make a
first deployment into an existing Sentinel workspace succeed.
"""

from tests.infra.bicep import MAIN, body, decorator, module, parse

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
