"""Which domains are the organisation's own: the tenant's verified domains from Graph, plus LOCAL_DOMAINS. Pure.

``Direction`` needs the organisation's own domains. Typing them into LOCAL_DOMAINS
goes stale the day a domain is added to the tenant, so the connector reads them from
Microsoft Graph (``GET /v1.0/domains``, application permission ``Domain.Read.All``)
once a day per feed and keeps the answer in the feed's checkpoint
(:class:`DiscoveredDomains`).

What counts as local:

* every domain Graph lists with ``isVerified: true``, whatever its services, and their
  subdomains (:func:`connector.mapping.is_local_domain`): the initial
  ``<tenant>.onmicrosoft.com`` domain counts (mail to and from it is the organisation's
  own), and so does ``<tenant>.mail.onmicrosoft.com``, the routing domain of hybrid
  mailboxes, listed or not: it is a sibling, not a subdomain, so it is added beside
  each ``<name>.onmicrosoft.com`` (Microsoft issues both to the one tenant);
* an unverified domain does not count: anyone can add a domain to a tenant without
  owning it;
* everything in LOCAL_DOMAINS counts as well: it adds domains Graph does not list
  (on-premises ones, or ones not verified yet).

When discovery fails (no ``Domain.Read.All``, Graph unavailable), the last list read
stays in use, else LOCAL_DOMAINS alone; the run goes on and its report says so
once. Only when no source names a domain at all does the run stop, with a setting
error (:func:`choose_local_domains`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from connector.domains import normalise_domain
from connector.errors import ConfigError, ConnectorError, GraphPermissionError
from connector.redact import hide_addresses, scrub

DOMAIN_PERMISSION = "Domain.Read.All"
"""The least-privileged application permission for ``GET /domains`` (Graph's domain-list reference)."""

_ONMICROSOFT = re.compile(r"([a-z0-9-]+)\.onmicrosoft\.com")
"""A tenant's ``<name>.onmicrosoft.com`` domain (one label before it, so not ``<name>.mail.onmicrosoft.com``)."""

REFRESH_AFTER = timedelta(hours=24)
"""A discovered list older than this is read again: a new domain counts from the next day at the latest."""


@dataclass(frozen=True, slots=True)
class DiscoveredDomains:
    """The tenant's verified domains as Graph last listed them, and when (kept in the checkpoint)."""

    domains: tuple[str, ...]
    fetched_at: datetime


def verified_domains(records: Iterable[Mapping[str, object]]) -> tuple[str, ...]:
    """The canonical names of the verified domains among Graph's ``domain`` objects, in order, once each.

    An object without a text ``id`` or without ``isVerified: true`` is left out.
    """
    found: dict[str, None] = {}
    for record in records:
        name = record.get("id")
        if record.get("isVerified") is True and isinstance(name, str) and name.strip():
            found[normalise_domain(name)] = None
    for name in list(found):
        tenant = _ONMICROSOFT.fullmatch(name)
        if tenant is not None:
            found.setdefault(f"{tenant.group(1)}.mail.onmicrosoft.com", None)
    return tuple(found)


def needs_refresh(cached: DiscoveredDomains | None, now: datetime) -> bool:
    """True when there is no list yet, it is :data:`REFRESH_AFTER` old, or it claims to be from the future."""
    if cached is None:
        return True
    age = now - cached.fetched_at
    return age >= REFRESH_AFTER or age < timedelta(0)


def discovery_failure(error: ConnectorError) -> str:
    """Why discovery failed, in a few words for the run report (no addresses, no secrets)."""
    if isinstance(error, GraphPermissionError):
        return f"permission {DOMAIN_PERMISSION} missing"
    return hide_addresses(scrub(str(error)))[:200]


@dataclass(frozen=True, slots=True)
class LocalDomains:
    """The domains a run classifies ``Direction`` with, and the one report line that says where they came from."""

    domains: tuple[str, ...]
    summary: str


def _time(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%MZ")


def choose_local_domains(
    setting: tuple[str, ...],
    cached: DiscoveredDomains | None,
    *,
    failure: str | None = None,
) -> LocalDomains:
    """The union of the discovered list (``cached``, None: none or discovery is off) and LOCAL_DOMAINS.

    ``failure`` is why this run's discovery failed, if it did: the summary says so and
    what is used instead.

    Raises:
        ConfigError: neither source names a domain; it names LOCAL_DOMAINS and the permission.
    """
    discovered = () if cached is None else cached.domains
    extra = tuple(domain for domain in setting if domain not in discovered)
    domains = (*discovered, *extra)
    if not domains:
        why = f"domain discovery failed ({failure})" if failure else "Graph listed no verified domain"
        raise ConfigError(
            [
                (
                    "LOCAL_DOMAINS",
                    f"is not set and {why}: set LOCAL_DOMAINS to the organisation's mail domains, or grant "
                    f"the application permission {DOMAIN_PERMISSION} so they are read from Graph",
                )
            ]
        )
    parts = []
    if cached is not None:
        parts.append(f"{len(discovered)} discovered {_time(cached.fetched_at)}")
    if extra or cached is None:
        parts.append(f"{len(extra)} from LOCAL_DOMAINS")
    summary = " + ".join(parts)
    if failure:
        summary = f"domain discovery failed ({failure}): using {summary}"
    return LocalDomains(domains=domains, summary=summary)
