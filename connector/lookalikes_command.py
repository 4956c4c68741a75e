"""``python -m connector lookalikes``: generate the look-alike watchlist CSV offline, or check it is current.

The one module that imports dnstwist. dnstwist is a command-line scanner as well as a
permutation engine: importing it imports socket, urllib and threading and sets the
process's default socket timeout (``socket.setdefaulttimeout(12.0)``), which would change
every later connection of the process. The timeout is put back after the import. Only
``Fuzzer.generate`` is called: it computes strings and never resolves, queries WHOIS or
GeoIP (those are ``Scanner`` and ``Whois``, never used here). What to keep, the CSV and the
limits are decided in :mod:`connector.lookalikes` (pure).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from connector.errors import ArgumentError, ConfigError
from connector.lookalikes import (
    WATCHLIST_ALIAS,
    Permutation,
    plural,
    refuse_over_limits,
    render_csv,
    watchlist_rows,
)
from connector.settings import local_domains

_timeout = socket.getdefaulttimeout()
try:
    import dnstwist  # type: ignore[import-untyped]  # no type information shipped
finally:
    socket.setdefaulttimeout(_timeout)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = Path("infra", "sentinel", "Watchlists", f"{WATCHLIST_ALIAS}.csv")


def permutations(domain: str) -> list[Permutation]:
    """The permutations dnstwist makes of ``domain`` (a canonical A-label domain) with its default fuzzers."""
    fuzzer = dnstwist.Fuzzer(domain)
    fuzzer.generate()
    return [Permutation(str(found["domain"]), str(found["fuzzer"])) for found in fuzzer.domains]


def generate_csv(domains: Sequence[str], *, unicode_homoglyphs: bool) -> tuple[str, int]:
    """The watchlist file for ``domains`` (canonical) and its row count; refused over a limit."""
    rows = watchlist_rows(
        {domain: permutations(domain) for domain in domains}, unicode_homoglyphs=unicode_homoglyphs
    )
    refuse_over_limits(rows)
    return render_csv(rows), len(rows)


def default_output(root: Path = REPO_ROOT) -> Path:
    """The committed watchlist of this checkout; refused outside one (the deployed app has no ``infra/``)."""
    path = root / DEFAULT_OUTPUT
    if not path.parent.is_dir():
        raise ArgumentError(
            f"--output is required here: {path.parent} does not exist (not a checkout of the repository)"
        )
    return path


def chosen_domains(given: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """``--domain`` values if any, else ``LOCAL_DOMAINS``; refused when neither names a domain."""
    if given:
        return tuple(dict.fromkeys(given))
    domains = local_domains(os.environ if env is None else env)
    if not domains:
        raise ConfigError(
            [
                (
                    "LOCAL_DOMAINS",
                    "is not set and no --domain was given: set it to the accepted domains, or pass --domain",
                )
            ]
        )
    return domains


def lookalikes_command(
    given: Sequence[str], output: Path | None, *, check: bool, unicode_homoglyphs: bool, out: TextIO
) -> int:
    """Write the watchlist (or, with ``check``, compare it); 0 written or current, 1 out of date."""
    domains = chosen_domains(given)
    path = output if output is not None else default_output()
    text, count = generate_csv(domains, unicode_homoglyphs=unicode_homoglyphs)
    if check:
        try:
            current: str | None = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        except (OSError, UnicodeDecodeError) as err:
            raise ArgumentError(f"--output: cannot read {path}: {err}") from None
        if current == text:
            out.write(f"{path} is current: {plural(len(domains), 'domain')}, {plural(count, 'row')}\n")
            return 0
        state = "does not exist" if current is None else "differs from what the domains give"
        out.write(
            f"{path} {state} ({plural(len(domains), 'domain')}, {plural(count, 'row')}): run the same command without "
            "--check, then redeploy the Bicep\n"
        )
        return 1
    _replace(path, text)
    out.write(
        f"wrote {plural(count, 'look-alike row')} for {plural(len(domains), 'domain')} to {path}; next: redeploy the Bicep "
        f"(infra/README.md), which creates or updates the watchlist {WATCHLIST_ALIAS} when the file has rows\n"
    )
    return 0


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it: a killed run leaves the old file whole."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with temporary.open("w", encoding="utf-8", newline="\n") as file:
            file.write(text)
        os.replace(temporary, path)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        raise ArgumentError(f"--output: cannot write {path}: {err.strerror or err}") from None
