"""checkov finds nothing in infra/ beyond the documented skip list, and parses every file it scans.

checkov lives in its own venv, ``.venv-checkov`` (scripts/setup.sh creates it from
requirements-checkov.txt), because it pins an old ``packaging``. checkov exits 0 when it
cannot parse a file, so the JSON report's ``parsing_errors`` is what these tests check.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.infra.bicep import INFRA, ROOT

CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
CONFIG = INFRA / ".checkov.yaml"


def _run_checkov(cwd: Path, config: Path) -> dict:
    if not CHECKOV.exists():
        pytest.skip(
            ".venv-checkov is missing: run scripts/setup.sh (it installs requirements-checkov.txt there)"
        )
    proc = subprocess.run(
        [str(CHECKOV), "-d", "infra", "--config-file", str(config), "-o", "json"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    try:
        output = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(
            f"checkov printed no JSON (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )
    reports = output if isinstance(output, list) else [output]
    bicep = [r for r in reports if r.get("check_type") == "bicep"]
    assert len(bicep) == 1, f"expected one bicep report, got {output!r:.2000}"
    return bicep[0]


@pytest.fixture(scope="module")
def report() -> dict:
    return _run_checkov(ROOT, CONFIG)


def _skip_list() -> dict[str, str]:
    """skip-check id -> the comment lines above it in .checkov.yaml."""
    skips: dict[str, str] = {}
    section = None
    reason: list[str] = []
    for line in CONFIG.read_text().splitlines():
        if re.match(r"^[a-z-]+:", line):
            section = line.rstrip(":")
            reason = []
        elif line.strip().startswith("#"):
            reason.append(line.strip().lstrip("#").strip())
        elif section == "skip-check" and line.strip().startswith("- "):
            skips[line.strip()[2:].strip()] = " ".join(reason)
            reason = []
    return skips


def test_checkov_parses_every_file_it_scans(report):
    assert report["results"]["parsing_errors"] == []
    assert report["summary"]["parsing_errors"] == 0


def test_checkov_finds_no_failed_check(report):
    failed = [
        f"{c['check_id']} {c['file_path']} {c['resource']}: {c['check_name']}"
        for c in report["results"]["failed_checks"]
    ]
    assert failed == []


def test_checkov_really_scanned_the_templates(report):
    scanned = {c["file_path"] for c in report["results"]["passed_checks"]}
    assert {"/modules/storage.bicep", "/modules/functionapp.bicep", "/modules/keyvault.bicep"} <= scanned
    assert report["summary"]["passed"] >= 20
    assert report["summary"]["resource_count"] >= 40


def test_every_skipped_check_has_a_reason():
    skips = _skip_list()
    assert skips, "no skip list found"
    for check_id, reason in skips.items():
        assert re.fullmatch(r"CKV2?_AZURE_\d+", check_id), check_id
        assert len(reason) > 30, f"{check_id} needs a reason in infra/.checkov.yaml"


def test_infra_readme_lists_the_same_skips():
    readme = (INFRA / "README.md").read_text()
    section = readme.split("### checkov skip list", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    assert set(re.findall(r"`(CKV2?_AZURE_\d+)`", section)) == set(_skip_list())


# The files checkov's pycep-parser 0.5.1 cannot parse, and what in them it cannot parse.
UNPARSABLE = {
    "graph-permission.bicep": "extension microsoftGraphV1",
    "graph-federation.bicep": "extension microsoftGraphV1",
    "tenant-checks.bicep": "fail(",
    "tenant-workspace.bicep": "fail(",
}


def _skip_paths(text: str) -> list[str]:
    section = re.search(r"^skip-path:\n((?:  .*\n)+)", text, re.MULTILINE)
    assert section, "no skip-path in infra/.checkov.yaml"
    return [
        line.strip()[2:].replace("\\.", ".")
        for line in section.group(1).splitlines()
        if line.strip()[:2] == "- "
    ]


def test_the_skipped_paths_are_the_files_checkov_cannot_parse(tmp_path):
    """Remove the skip-paths and checkov's pycep-parser 0.5.1 fails on exactly those files.

    `extension` (Microsoft Graph Bicep extension) and fail() are not in its grammar. When a checkov
    upgrade parses one of them, this test fails: drop its skip-path then.
    """
    text = CONFIG.read_text()
    assert sorted(_skip_paths(text)) == sorted(UNPARSABLE)
    for name, construct in UNPARSABLE.items():
        assert construct in (INFRA / "modules" / name).read_text(), name
    shutil.copytree(INFRA, tmp_path / "infra")
    (tmp_path / "infra" / ".checkov.yaml").unlink()
    config = tmp_path / "checkov.yaml"
    config.write_text(re.sub(r"^  - [\w-]+\\\.bicep\n", "", text, flags=re.MULTILINE))
    assert _skip_paths(config.read_text()) == []
    unparsed = _run_checkov(tmp_path, config)["results"]["parsing_errors"]
    assert sorted(Path(p).name for p in unparsed) == sorted(UNPARSABLE)


def test_checkov_parses_the_tenant_settings_module():
    """tenant-settings loops instead of map() (which 0.5.1 cannot parse), so checkov reads it."""
    assert _checkov_file_summary(INFRA / "modules" / "tenant-settings.bicep")["parsing_errors"] == 0


def _checkov_file_summary(path: Path) -> dict:
    if not CHECKOV.exists():
        pytest.skip(".venv-checkov is missing: run scripts/setup.sh")
    proc = subprocess.run(
        [str(CHECKOV), "-f", str(path), "--framework", "bicep", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = json.loads(proc.stdout)
    # With nothing to check, checkov prints the bare summary instead of a report.
    return output.get("summary", output)


def test_checkov_parses_the_sentinel_content_module_which_avoids_func(tmp_path):
    """The content module maps durations without a user-defined `func`: checkov's pycep 0.5.1 cannot parse one.

    checkov has no checks for its resource types, so the directory scan above would not
    notice the module being skipped; parsing it on its own shows it parses.
    """
    assert _checkov_file_summary(INFRA / "modules" / "sentinel-content.bicep")["parsing_errors"] == 0
    with_func = tmp_path / "with-func.bicep"
    with_func.write_text("func iso(d string) string => 'PT${toUpper(d)}'\n")
    assert _checkov_file_summary(with_func)["parsing_errors"] == 1


def test_checkov_parses_the_sentinel_connector_module():
    """checkov has no checks for dataConnectorDefinitions either, so only a parse of its own shows it is read."""
    assert _checkov_file_summary(INFRA / "modules" / "sentinel-connector.bicep")["parsing_errors"] == 0
