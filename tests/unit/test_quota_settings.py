"""GRAPH_QUOTA_*: the tenant's quota as the connector paces itself, refused before any network call."""

import pytest

from connector.errors import ConfigError
from connector.quota import QuotaPolicy
from connector.settings import Settings
from tests.unit.test_settings import BASE


def test_the_quota_defaults_are_graphs_documented_100_per_5_minutes_with_no_headroom():
    assert Settings.from_env(BASE).graph_quota == QuotaPolicy(
        limit=100, window_seconds=300.0, headroom=0, live_reserve_percent=20.0
    )


def test_quota_settings_are_read():
    settings = Settings.from_env(
        {
            **BASE,
            "GRAPH_QUOTA_REQUESTS": "80",
            "GRAPH_QUOTA_WINDOW_SECONDS": "30",
            "GRAPH_QUOTA_HEADROOM": "10",
            "GRAPH_QUOTA_LIVE_RESERVE_PERCENT": "25",
        }
    )

    assert settings.graph_quota == QuotaPolicy(
        limit=80, window_seconds=30.0, headroom=10, live_reserve_percent=25.0
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GRAPH_QUOTA_REQUESTS", "0"),
        ("GRAPH_QUOTA_WINDOW_SECONDS", "0.5"),
        ("GRAPH_QUOTA_HEADROOM", "-1"),
        ("GRAPH_QUOTA_LIVE_RESERVE_PERCENT", "95"),
    ],
)
def test_a_quota_setting_out_of_range_is_refused_by_name(name, value):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, name: value})

    assert [problem for problem, _ in caught.value.problems] == [name]


def test_headroom_that_leaves_the_connector_nothing_is_refused_saying_what_to_change():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, "GRAPH_QUOTA_REQUESTS": "50", "GRAPH_QUOTA_HEADROOM": "50"})

    assert caught.value.problems[0][0] == "GRAPH_QUOTA_HEADROOM"
    assert "below GRAPH_QUOTA_REQUESTS (50)" in str(caught.value)
