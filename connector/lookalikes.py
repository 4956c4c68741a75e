"""The look-alike domain watchlist: which permutations of the organisation's domains it lists, and its CSV.

An analytic rule flags mail from a domain that imitates one of the organisation's own
(``contoso.com`` → ``c0ntoso.com``, ``contoso-com.com``, ``xn--cntoso-…``). Sentinel reads the
list from the watchlist ``LookalikeDomains``, which the Bicep creates from the CSV this module
renders; the permutations themselves come from dnstwist (:mod:`connector.lookalikes_command`,
the one module that imports it, because dnstwist imports socket and HTTP modules and changes
the process's default socket timeout when imported).

What is decided here, without I/O:

* **Never the organisation's own mail.** A permutation that is one of the organisation's
  domains, or under one (``Direction`` counts subdomains as local), is dropped: with two
  accepted domains ``contoso.com`` and ``contoso.co.uk``, dnstwist turns the second into
  ``contoso.uk``, which the organisation may own too.
* **One spelling per domain**, the one the table's ``SenderDomain`` holds
  (:func:`connector.domains.normalise_domain`: lower-case, ``xn--`` for Unicode), so the
  rule's join matches exactly.
* **One row per look-alike.** ``LookalikeDomain`` is the watchlist's SearchKey; a domain
  that imitates two of the organisation's domains is listed once, for the first of them
  in sort order, so the rule's lookup never doubles an alert.
* **Deterministic output**: sorted by original domain, then look-alike, so regenerating
  with the same domains and dnstwist version gives the same bytes (``--check``), and a
  new domain shows in a diff as one block.
* **Unicode homoglyphs are opt-in.** dnstwist's ``homoglyph`` fuzzer mixes two
  substitutions from its Unicode glyph table, which gives thousands of ``xn--`` domains
  for an ordinary name (``contoso.com``: about 2,900 of its 3,100 permutations, 135,000
  characters alone), more than the deployment can carry (:data:`LIMITS`). Its ASCII results
  (``rn`` → ``m``, ``o`` → ``0``, ``l`` → ``1``) are always kept, and so are the other
  fuzzers' Unicode results.
* **The limits** a watchlist deployed by the Bicep must fit (:data:`LIMITS`), refused with
  how many domains or rows to drop, before anything is written.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from connector.domains import normalise_domain
from connector.errors import ArgumentError

WATCHLIST_ALIAS = "LookalikeDomains"
HEADER = ("LookalikeDomain", "OriginalDomain", "Fuzzer")
HOMOGLYPH = "homoglyph"
ORIGINAL = "*original"  # dnstwist lists the input itself under this fuzzer name


@dataclass(frozen=True)
class Limit:
    """One documented ceiling on the watchlist file."""

    what: str
    maximum: int
    unit: str  # "characters" or "rows"
    source: str


# Every limit the CSV meets on its way into Sentinel, with its source:
# * The Bicep reads the file at build time with loadTextContent, whose "maximum allowed size of
#   the file is 131,072 characters, including line endings" (Bicep file functions,
#   https://learn.microsoft.com/azure/azure-resource-manager/bicep/bicep-functions-files#loadtextcontent).
#   It is by far the smallest, so it is the one that binds.
# * Sentinel: "Local file uploads are currently limited to files of up to 3.8 MB in size", and
#   "the total number of active watchlist items across all watchlists in a single workspace is
#   currently limited to 10 million" (Watchlists in Microsoft Sentinel, Limitations,
#   https://learn.microsoft.com/azure/sentinel/watchlists#limitations-of-watchlists). The file is
#   ASCII (A-labels), so characters are bytes; 3.8 MB is taken as 3,800,000 bytes, the smaller
#   reading. Other watchlists of the workspace count against the 10 million too.
LIMITS: tuple[Limit, ...] = (
    Limit("Bicep's loadTextContent", 131_072, "characters", "the Bicep build reads the file with it"),
    Limit("a Sentinel watchlist from a local file", 3_800_000, "characters", "3.8 MB"),
    Limit("Sentinel's active watchlist items per workspace", 10_000_000, "rows", "10 million"),
)


@dataclass(frozen=True, order=True)
class LookalikeRow:
    """One watchlist row; the field order is the sort order."""

    original_domain: str
    lookalike_domain: str
    fuzzer: str


@dataclass(frozen=True)
class Permutation:
    """What dnstwist generated: a domain and the name of the fuzzer that made it."""

    domain: str
    fuzzer: str


def is_own_domain(domain: str, own: Iterable[str]) -> bool:
    """True when ``domain`` is one of ``own`` or under one, as ``Direction`` decides what is local."""
    return any(domain == mine or domain.endswith("." + mine) for mine in own)


def watchlist_rows(
    permutations: Mapping[str, Iterable[Permutation]], *, unicode_homoglyphs: bool = False
) -> list[LookalikeRow]:
    """The watchlist's rows from each organisation domain's permutations (keys: canonical domains).

    Every key is one of the organisation's domains, so a permutation that is any of them
    (or under one) is dropped, whichever domain it was generated from.
    """
    own = tuple(permutations)
    candidates = sorted(
        LookalikeRow(original, normalise_domain(permutation.domain), permutation.fuzzer)
        for original, generated in permutations.items()
        for permutation in generated
        if permutation.fuzzer != ORIGINAL
        and (unicode_homoglyphs or permutation.fuzzer != HOMOGLYPH or not _has_a_label(permutation.domain))
    )
    rows: list[LookalikeRow] = []
    seen: set[str] = set()
    for row in candidates:
        if (
            row.lookalike_domain in seen
            or not row.lookalike_domain
            or is_own_domain(row.lookalike_domain, own)
        ):
            continue
        seen.add(row.lookalike_domain)
        rows.append(row)
    return rows


def _has_a_label(domain: str) -> bool:
    return any(label.startswith("xn--") for label in domain.lower().split("."))


def render_csv(rows: Sequence[LookalikeRow]) -> str:
    """The watchlist file: the header, then one line per row, each ending in a line feed.

    Domains in A-label form and dnstwist's fuzzer names hold no comma, quote or line
    break, so no field needs quoting (checked, since a quote would shift the columns).
    """
    lines = [",".join(HEADER)]
    for row in rows:
        fields = (row.lookalike_domain, row.original_domain, row.fuzzer)
        if any(ch in field for field in fields for ch in ',"\r\n'):
            raise ValueError(f"watchlist field would need CSV quoting: {fields!r}")
        lines.append(",".join(fields))
    return "\n".join(lines) + "\n"


def refuse_over_limits(rows: Sequence[LookalikeRow], limits: Sequence[Limit] = LIMITS) -> None:
    """Raise ArgumentError (exit 2) naming the limit and how many domains or rows to drop, if one is passed.

    Checked before writing, so a file that the Bicep build or Sentinel would refuse is
    never written (nor left half-replaced).
    """
    size = len(render_csv(rows))
    for limit in limits:
        measured = size if limit.unit == "characters" else len(rows)
        if measured <= limit.maximum:
            continue
        keep = _rows_that_fit(rows, limit)
        dropped = _domains_to_drop(rows, limit)
        shown = ", ".join(dropped[:3]) + (", …" if len(dropped) > 3 else "")
        raise ArgumentError(
            f"the {WATCHLIST_ALIAS} watchlist would be {measured:,} {limit.unit} ({plural(len(rows), 'row')}), "
            f"over the {limit.maximum:,} of {limit.what} ({limit.source}): drop at least "
            f"{plural(len(rows) - keep, 'row')}, e.g. leave out {len(dropped)} of the "
            f"{plural(len({row.original_domain for row in rows}), 'domain')} ({shown})"
            + (" or --unicode-homoglyphs" if _has_unicode_homoglyphs(rows) else "")
        )


def plural(count: int, noun: str) -> str:
    """``1 domain``, ``2 domains``."""
    return f"{count:,} {noun}" + ("" if count == 1 else "s")


def _line_length(row: LookalikeRow) -> int:
    return len(row.lookalike_domain) + len(row.original_domain) + len(row.fuzzer) + 3


def _rows_that_fit(rows: Sequence[LookalikeRow], limit: Limit) -> int:
    """The most rows that fit under ``limit`` (keeping the shortest lines first)."""
    if limit.unit == "rows":
        return limit.maximum
    used = len(",".join(HEADER)) + 1
    kept = 0
    for length in sorted(_line_length(row) for row in rows):
        if used + length > limit.maximum:
            break
        used += length
        kept += 1
    return kept


def _domains_to_drop(rows: Sequence[LookalikeRow], limit: Limit) -> list[str]:
    """The fewest of the organisation's domains to leave out for the rest to fit (the largest first)."""
    per_domain: dict[str, int] = {}
    for row in rows:
        amount = _line_length(row) if limit.unit == "characters" else 1
        per_domain[row.original_domain] = per_domain.get(row.original_domain, 0) + amount
    total = sum(per_domain.values()) + (len(",".join(HEADER)) + 1 if limit.unit == "characters" else 0)
    dropped: list[str] = []
    for domain, amount in sorted(per_domain.items(), key=lambda item: (-item[1], item[0])):
        if total <= limit.maximum:
            break
        total -= amount
        dropped.append(domain)
    return dropped


def _has_unicode_homoglyphs(rows: Sequence[LookalikeRow]) -> bool:
    return any(row.fuzzer == HOMOGLYPH and _has_a_label(row.lookalike_domain) for row in rows)
