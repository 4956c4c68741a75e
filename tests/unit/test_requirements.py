"""Every third-party import is pinned: runtime ones in requirements.txt, the rest there or in requirements-dev.txt.

Why: an import that nobody pinned still works on a developer's machine, because some other
package pulled its distribution in (PyJWT came with msal, cryptography with azure-identity),
and then breaks or changes silently when that package's own dependencies move. The imports
are read from the source with ``ast``, so a new ``import`` fails here until it is pinned.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from functools import cache
from importlib.metadata import files, packages_distributions, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = frozenset({"connector", "tests", "function_app", "scripts"})


def _sources() -> list[Path]:
    folders = [ROOT / "connector", ROOT / "tests", ROOT / "scripts"]
    return sorted([ROOT / "function_app.py", *(path for folder in folders for path in folder.rglob("*.py"))])


def _is_runtime(path: Path) -> bool:
    """Code that ships: the function app and ``connector/`` without the simulator."""
    parts = path.relative_to(ROOT).parts
    return parts == ("function_app.py",) or (parts[0] == "connector" and parts[1] != "simulator")


def _imports(path: Path) -> Iterator[tuple[str, str]]:
    """``(module as written, dotted name to look up)`` per imported name.

    ``from a import b`` is looked up as ``a.b`` because ``b`` may be a module of a namespace
    package (``from azure import functions``).
    """
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from ((alias.name, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield from ((node.module, f"{node.module}.{alias.name}") for alias in node.names)


def _normalise(name: str) -> str:
    """PEP 503 name, so ``PyJWT`` and ``pyjwt`` compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def _top_level_owners() -> dict[str, list[str]]:
    return packages_distributions()


@cache
def _files_of(distribution: str) -> tuple[str, ...]:
    return tuple(str(file) for file in files(distribution) or ())


@cache
def _distribution_of(dotted: str) -> str | None:
    """The installed distribution providing ``dotted``, or None if none (or no single one) does.

    ``packages_distributions()`` maps top-level names. A namespace such as ``azure`` belongs to
    several distributions, so the one whose files hold the deepest prefix of the name wins.
    """
    parts = dotted.split(".")
    owners = sorted(set(_top_level_owners().get(parts[0], [])))
    if len(owners) <= 1:
        return owners[0] if owners else None
    for depth in range(len(parts), 1, -1):
        prefix = "/".join(parts[:depth])
        claimed = [
            d for d in owners if any(f == f"{prefix}.py" or f.startswith(f"{prefix}/") for f in _files_of(d))
        ]
        if len(claimed) == 1:
            return claimed[0]
    return None


def _third_party_imports(*, runtime: bool) -> dict[tuple[str, str], str | None]:
    """``(file, module) -> distribution`` for runtime code (``runtime=True``) or for everything else."""
    found: dict[tuple[str, str], str | None] = {}
    for path in _sources():
        if _is_runtime(path) != runtime:
            continue
        for module, dotted in _imports(path):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in FIRST_PARTY:
                continue
            key = (path.relative_to(ROOT).as_posix(), module)
            found[key] = found.get(key) or _distribution_of(dotted)
    return found


def _pinned(*requirement_files: str) -> set[str]:
    """Distributions pinned with ``==`` in the given files (``-r`` lines are not followed)."""
    pins: set[str] = set()
    for name in requirement_files:
        for line in (ROOT / name).read_text(encoding="utf-8").splitlines():
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?\s*==", line)
            if match:
                pins.add(_normalise(match[1]))
    return pins


def _unpinned(imports: dict[tuple[str, str], str | None], pins: set[str], where: str) -> list[str]:
    """One line per file and missing distribution, naming the first module that needs it."""
    problems: dict[tuple[str, str | None], str] = {}
    for (file, module), distribution in sorted(imports.items()):
        if distribution is None:
            problems[(file, module)] = (
                f"{file}: imports {module}, which no single installed distribution provides"
            )
        elif _normalise(distribution) not in pins:
            problems.setdefault(
                (file, distribution),
                f"{file}: imports {module}; pin its distribution in {where}: {distribution}=={version(distribution)}",
            )
    return list(problems.values())


def test_the_import_scan_resolves_namespace_packages_and_skips_first_party_and_stdlib():
    runtime = _third_party_imports(runtime=True)
    distributions = {_normalise(d) for d in runtime.values() if d}

    assert {"azure-monitor-ingestion", "azure-storage-blob", "azure-core", "msal"} <= distributions
    assert ("function_app.py", "azure.functions") in runtime
    assert not {m for _, m in runtime if m.split(".")[0] in FIRST_PARTY | {"json", "__future__"}}
    assert _distribution_of("jwt") == "PyJWT"


def test_every_runtime_import_is_pinned_in_requirements_txt():
    problems = _unpinned(_third_party_imports(runtime=True), _pinned("requirements.txt"), "requirements.txt")

    assert not problems, "unpinned runtime imports:\n" + "\n".join(problems)


def test_every_test_script_and_simulator_import_is_pinned_in_a_requirements_file():
    problems = _unpinned(
        _third_party_imports(runtime=False),
        _pinned("requirements.txt", "requirements-dev.txt"),
        "requirements-dev.txt",
    )

    assert not problems, "unpinned imports:\n" + "\n".join(problems)
