"""Reading the Bicep templates in ``infra/`` with pycep-parser, for the infra tests.

pycep-parser (``from pycep import BicepParser``; ``BicepParser().parse(file_path=...)``)
turns a ``.bicep`` file into a JSON-like dict: ``parameters``, ``variables``,
``resources``, ``modules``, ``outputs``. Its limits, found while writing these tests:

* it cannot parse ``.bicepparam`` files (``using`` and ``param x = ...`` are not in its
  grammar), so ``main.bicepparam`` is checked with a small line reader instead;
* identifiers and string literals come out the same (``'blob'`` and ``blob`` are both
  ``"blob"``);
* operator precedence is wrong: ``a.b == 'x' ? y : z`` becomes ``a.(b == ('x' ? y : z))``.
  The templates therefore avoid comparisons where a test evaluates them (the table
  type mapping is ``replace(column.type, 'datetime', 'dateTime')``), and the tests never
  evaluate a ternary or a comparison, only property access, ``replace``, string
  interpolation and ``for`` loops (see :func:`evaluate`).

checkov bundles the older pycep-parser 0.5.1, which also cannot parse ``extension``
(the Microsoft Graph Bicep extension); see ``infra/.checkov.yaml``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
MODULES = INFRA / "modules"
SCHEMA_FILE = ROOT / "connector" / "data" / "EmailEvents_CL.json"
HEALTH_SCHEMA_FILE = ROOT / "connector" / "data" / "MessageTraceHealth_CL.json"

_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.]*)\}")


@lru_cache(maxsize=1)
def _parser() -> BicepParser:
    return BicepParser()


@cache
def parse(path: Path) -> dict[str, Any]:
    """The pycep parse of one Bicep file (cached)."""
    return _parser().parse(file_path=path)


def bicep_files() -> list[Path]:
    """Every ``.bicep`` file under ``infra/``."""
    return sorted(INFRA.rglob("*.bicep"))


def module(name: str) -> dict[str, Any]:
    """The parse of ``infra/modules/<name>.bicep``."""
    return parse(MODULES / f"{name}.bicep")


def body(declaration: Mapping[str, Any]) -> dict[str, Any]:
    """The body of a resource or module, unwrapping ``= if (cond) { ... }`` and ``= [for ...: { ... }]``."""
    config = declaration["config"]
    if set(config) == {"condition", "config"} or "loop_type" in config:
        return dict(config["config"])
    return dict(config)


def loop(declaration: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``for`` of a resource or module collection (``loop_type``: type and detail), or None."""
    config = declaration["config"]
    if "loop_type" in config:
        return dict(config["loop_type"])
    return None


def condition(declaration: Mapping[str, Any]) -> Any:
    """The ``if (...)`` condition of a resource or module, or None."""
    config = declaration["config"]
    if set(config) == {"condition", "config"}:
        return config["condition"]
    return None


def leaves(node: Any) -> Iterator[Any]:
    """Every scalar in a parse tree."""
    if isinstance(node, Mapping):
        for value in node.values():
            yield from leaves(value)
    elif isinstance(node, list):
        for value in node:
            yield from leaves(value)
    else:
        yield node


def nodes(node: Any) -> Iterator[Any]:
    """Every sub-tree (dicts and lists included) of a parse tree."""
    yield node
    if isinstance(node, Mapping):
        for value in node.values():
            yield from nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from nodes(value)


def accessor_path(node: Any) -> list[str]:
    """``a.b.c`` as ``["a", "b", "c"]`` (pycep nests property access to the right)."""
    if isinstance(node, str):
        return [node]
    operator = node["operator"]
    if operator["type"] != "property_accessor":
        raise ValueError(f"not a property access: {node!r}")
    operands = operator["operands"]
    return accessor_path(operands["operand_1"]) + accessor_path(operands["operand_2"])


def _lookup(path: list[str], env: Mapping[str, Any]) -> Any:
    value: Any = env[path[0]]
    for part in path[1:]:
        value = value[part]
    return value


def interpolate(text: str, env: Mapping[str, Any]) -> str:
    """Resolve ``${a.b}`` in a Bicep string from ``env``."""
    return _INTERPOLATION.sub(lambda m: str(_lookup(m.group(1).split("."), env)), text)


def evaluate(node: Any, env: Mapping[str, Any]) -> Any:
    """Evaluate the small subset of Bicep the schema wiring uses.

    Supported: identifiers bound in ``env`` (anything else is a string literal),
    property access, string interpolation, ``replace(...)``, ``for`` loops, objects and
    arrays. Anything else raises, so a template change the tests cannot follow fails
    loudly instead of passing by accident.
    """
    if isinstance(node, str):
        if node in env:
            return env[node]
        return interpolate(node, env)
    if node is None or isinstance(node, bool | int):
        return node
    if isinstance(node, list):
        return [evaluate(item, env) for item in node]
    if set(node) == {"operator"}:
        return _lookup(accessor_path(node), env)
    if set(node) == {"function"}:
        function = node["function"]
        if function["type"] == "replace":
            args = function["parameters"]
            return str(evaluate(args["original_string"], env)).replace(
                str(evaluate(args["old_string"], env)), str(evaluate(args["new_string"], env))
            )
        raise ValueError(f"function {function['type']} is not supported by the test evaluator")
    if "loop_type" in node:
        loop = node["loop_type"]
        if loop["type"] != "array" or node.get("condition") is not None:
            raise ValueError(f"unsupported loop {loop!r}")
        item = loop["detail"]["item_name"]
        items = evaluate(loop["detail"]["array_name"], env)
        return [evaluate(node["config"], {**env, item: value}) for value in items]
    return {evaluate(key.strip("'"), env): evaluate(value, env) for key, value in node.items()}


def declared_params(parsed: Mapping[str, Any]) -> dict[str, Any]:
    """Parameter name -> default (``None`` when the parameter is required)."""
    return {name: spec.get("default") for name, spec in parsed.get("parameters", {}).items()}


def decorator(spec: Mapping[str, Any], kind: str) -> Any:
    """The argument of decorator ``kind`` of a parameter, or None."""
    for deco in spec.get("decorators", []):
        if deco.get("type") == kind:
            return deco.get("argument", True)
    return None
