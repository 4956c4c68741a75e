"""The README's settings table names exactly the settings the code reads."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_settings_table_matches_the_settings_the_code_reads():
    code = (ROOT / "connector" / "settings.py").read_text()
    read_by_code = set(re.findall(r'"([A-Z][A-Z0-9_]{3,})"', code))
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Settings", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]{3,})`", table))

    assert documented == read_by_code
