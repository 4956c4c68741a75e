"""Which domains are local: Graph's verified ones, LOCAL_DOMAINS, the daily refresh and the fallbacks."""

from datetime import UTC, datetime, timedelta

import pytest

from connector.checkpoint import decode_checkpoint, encode_checkpoint
from connector.errors import ConfigError, GraphPermissionError, GraphUnavailableError
from connector.state import Checkpoint, FeedProgress
from connector.tenant_domains import (
    DiscoveredDomains,
    choose_local_domains,
    discovery_failure,
    needs_refresh,
    verified_domains,
)

T = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def test_only_verified_domains_count_in_canonical_form_once_each():
    records = [
        {"id": "Contoso.COM", "isVerified": True},
        {"id": "contoso.com.", "isVerified": True},
        {"id": "Bücher.example", "isVerified": True},
        {"id": "unverified.example", "isVerified": False},
        {"id": "no-flag.example"},
        {"isVerified": True},
    ]

    assert verified_domains(records) == ("contoso.com", "xn--bcher-kva.example")


def test_the_initial_onmicrosoft_domain_brings_its_mail_routing_sibling():
    records = [{"id": "contoso.onmicrosoft.com", "isVerified": True, "isInitial": True}]

    assert verified_domains(records) == ("contoso.onmicrosoft.com", "contoso.mail.onmicrosoft.com")


@pytest.mark.parametrize(
    ("age", "stale"),
    [(timedelta(hours=23, minutes=59), False), (timedelta(hours=24), True), (timedelta(hours=-1), True)],
)
def test_a_cached_list_is_read_again_once_it_is_a_day_old_or_from_the_future(age, stale):
    cached = DiscoveredDomains(domains=("contoso.com",), fetched_at=T)

    assert needs_refresh(cached, T + age) is stale
    assert needs_refresh(None, T) is True


def test_discovered_and_set_domains_are_united_and_the_summary_counts_the_extra_ones():
    cached = DiscoveredDomains(domains=("contoso.com", "fabrikam.com"), fetched_at=T)

    chosen = choose_local_domains(("fabrikam.com", "onprem.example"), cached)

    assert chosen.domains == ("contoso.com", "fabrikam.com", "onprem.example")
    assert chosen.summary == "2 discovered 2026-11-24T10:00Z + 1 from LOCAL_DOMAINS"


def test_a_failed_discovery_without_a_cache_uses_local_domains_and_says_why():
    failure = discovery_failure(GraphPermissionError("Insufficient privileges"))

    chosen = choose_local_domains(("contoso.com",), None, failure=failure)

    assert chosen.domains == ("contoso.com",)
    assert chosen.summary == (
        "domain discovery failed (permission Domain.Read.All missing): using 1 from LOCAL_DOMAINS"
    )


def test_no_domain_from_any_source_is_a_setting_error_naming_the_setting_and_the_permission():
    failure = discovery_failure(GraphUnavailableError("Graph still failing after 3 attempts"))

    with pytest.raises(ConfigError) as caught:
        choose_local_domains((), None, failure=failure)

    assert caught.value.setting == "LOCAL_DOMAINS"
    assert "Domain.Read.All" in str(caught.value)
    assert "Graph still failing" in str(caught.value)


def test_the_cached_list_survives_the_checkpoint_and_a_checkpoint_without_it_reads_as_none():
    cached = DiscoveredDomains(domains=("contoso.com", "xn--bcher-kva.example"), fetched_at=T)
    with_list = Checkpoint(progress=FeedProgress(feed="live", discovered_domains=cached), ledger={})
    without = Checkpoint(progress=FeedProgress(feed="live"), ledger={})

    assert decode_checkpoint(encode_checkpoint(with_list), where="t").progress.discovered_domains == cached
    assert b"discovered_domains" not in encode_checkpoint(without)
    assert decode_checkpoint(encode_checkpoint(without), where="t").progress.discovered_domains is None
