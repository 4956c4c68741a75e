"""A local trial: the simulator's state directory, environment, CA bundle and stored rows.

Why: someone trying the connector runs ``python -m connector.simulator serve`` in one
shell and ``python -m connector run`` in another. The second shell needs every setting
(storage included), a CA bundle it can keep using for other HTTPS calls, and a way to
see what the simulated workspace stored. So ``serve`` writes, in a state directory
(``.simulator/`` by default) that outlives it:

* ``ca-bundle.pem``: the system's trusted CAs (certifi's bundle, which ``requests`` uses by default,
  plus the OS bundle when there is one) followed by the simulator's CA. Pointing
  ``REQUESTS_CA_BUNDLE``/``SSL_CERT_FILE`` at it keeps every other HTTPS call in that
  shell working;
* ``env.sh``: the ``export`` lines (``. .simulator/env.sh`` in the second shell);
* ``simulator.json`` while it runs: where its admin route is and the token it wants
  (mode 0600), for ``python -m connector.simulator rows``.
"""

from __future__ import annotations

import json
import os
import shlex
import ssl
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from requests.utils import DEFAULT_CA_BUNDLE_PATH

DEFAULT_STATE_DIR = Path(".simulator")
CA_BUNDLE_NAME = "ca-bundle.pem"
ENV_SCRIPT_NAME = "env.sh"
RUNNING_NAME = "simulator.json"
CHECKPOINT_CONTAINER = "message-trace-local"
PEM_END = "-----END CERTIFICATE-----"


def system_trust_pems() -> list[str]:
    """The PEM certificates this machine trusts: certifi's bundle, then the OS bundle's extras."""
    sources = [Path(DEFAULT_CA_BUNDLE_PATH)]
    os_bundle = ssl.get_default_verify_paths().cafile
    if os_bundle:
        sources.append(Path(os_bundle))
    seen: dict[str, None] = {}
    for source in sources:
        try:
            text = source.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for block in split_pem(text):
            seen.setdefault(block, None)
    return list(seen)


def split_pem(text: str) -> list[str]:
    """The certificate blocks of a PEM text, each from BEGIN to END (comments dropped)."""
    blocks = []
    for part in text.split(PEM_END)[:-1]:
        begin = part.find("-----BEGIN CERTIFICATE-----")
        if begin >= 0:
            blocks.append(part[begin:].strip() + "\n" + PEM_END + "\n")
    return blocks


def write_private(path: Path, text: str, mode: int = 0o600) -> None:
    """Write ``text`` to ``path`` atomically (a reader never sees half a file), with ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_ca_bundle(state_dir: Path, simulator_ca_pem: str) -> Path:
    """Write the system's trust plus the simulator's CA to ``state_dir/ca-bundle.pem``."""
    path = state_dir / CA_BUNDLE_NAME
    text = "".join(system_trust_pems())
    text += "# Message Trace Simulator CA (this run of python -m connector.simulator serve)\n"
    text += simulator_ca_pem if simulator_ca_pem.endswith("\n") else simulator_ca_pem + "\n"
    write_private(path, text, 0o644)
    return path


def shell_exports(env: Mapping[str, str]) -> str:
    """``export K='V'`` lines a POSIX shell can ``eval`` or source."""
    return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in env.items())


def dotenv(env: Mapping[str, str]) -> str:
    """``K='V'`` lines: a ``.env`` file (python-dotenv, ``set -a; . FILE``)."""
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in env.items())


@dataclass(frozen=True, slots=True)
class RunningSimulator:
    """What ``serve`` records for the ``rows`` command while it runs."""

    admin_url: str
    admin_token: str
    pid: int

    def save(self, state_dir: Path) -> None:
        document = {"admin_url": self.admin_url, "admin_token": self.admin_token, "pid": self.pid}
        write_private(state_dir / RUNNING_NAME, json.dumps(document) + "\n")

    @classmethod
    def load(cls, state_dir: Path) -> RunningSimulator | None:
        try:
            document = json.loads((state_dir / RUNNING_NAME).read_text(encoding="utf-8"))
            return cls(str(document["admin_url"]), str(document["admin_token"]), int(document["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def summarise_rows(rows: Iterable[Mapping[str, Any]]) -> str:
    """One line: rows, distinct ``RowId``, duplicates by ``RowId`` and rows per status.

    A duplicate is a row whose ``RowId`` an earlier row already has (the same record,
    status and revision stored twice); a status change is a new ``RowId``, not a duplicate.
    """
    per_row_id: Counter[str] = Counter()
    per_status: Counter[str] = Counter()
    total = 0
    without_id = 0
    for row in rows:
        total += 1
        row_id = str(row.get("RowId") or "")
        if row_id:
            per_row_id[row_id] += 1
        else:
            without_id += 1
        per_status[str(row.get("Status") or "?")] += 1
    duplicates = sum(count - 1 for count in per_row_id.values())
    statuses = ", ".join(f"{status} {count}" for status, count in sorted(per_status.items()))
    line = f"rows {total}, distinct RowId {len(per_row_id)}, duplicates by RowId {duplicates}"
    if without_id:
        line += f", without RowId {without_id}"
    return line + (f"; per status: {statuses}" if statuses else "")


def local_environment(
    simulator_env: Mapping[str, str],
    *,
    workspace_id: str,
    ca_bundle: Path,
    storage: Mapping[str, str],
    initial_lookback_hours: int,
) -> dict[str, str]:
    """Every setting ``python -m connector run`` needs against a running simulator.

    ``storage`` is Azurite's connection string (blob store) or a file store's directory;
    ``WORKSPACE_ID`` turns on workspace verification against the simulated query API.
    """
    env = dict(simulator_env)
    env.update(
        {
            "REQUESTS_CA_BUNDLE": str(ca_bundle),
            "SSL_CERT_FILE": str(ca_bundle),
            "WORKSPACE_ID": workspace_id,
            "INITIAL_LOOKBACK_HOURS": str(initial_lookback_hours),
            **storage,
        }
    )
    return env
