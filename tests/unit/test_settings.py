from datetime import timedelta

import pytest

from connector.errors import ConfigError
from connector.settings import AuthMode, Settings, StoreKind, timer_schedule

BASE = {
    "TENANT_ID": "00000000-0000-0000-0000-000000000001",
    "LOCAL_DOMAINS": "Contoso.com, fabrikam.com",
    "INGESTION_ENDPOINT": "https://dcr.example.ingest.monitor.azure.com",
    "DCR_IMMUTABLE_ID": "dcr-0123456789abcdef0123456789abcdef",
    "STORAGE_ACCOUNT_URL": "https://acct.blob.core.windows.net",
}


def test_defaults_are_applied_when_only_required_settings_are_given():
    settings = Settings.from_env(BASE)

    assert settings.graph_auth_mode is AuthMode.MANAGED_IDENTITY
    assert settings.local_domains == ("contoso.com", "fabrikam.com")
    assert settings.overlap_lookback == timedelta(minutes=60)
    assert settings.settle_delay == timedelta(minutes=2)
    assert settings.checkpoint.kind is StoreKind.BLOB
    assert settings.dcr_stream_name == "Custom-EmailEvents"


def test_every_missing_required_setting_is_named_in_one_error():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"DISCOVER_DOMAINS": "false"})

    names = {name for name, _ in caught.value.problems}
    assert {
        "TENANT_ID",
        "LOCAL_DOMAINS",
        "INGESTION_ENDPOINT",
        "DCR_IMMUTABLE_ID",
        "STORAGE_ACCOUNT_URL",
    } <= names


def test_local_domains_is_optional_while_domain_discovery_is_on_which_is_the_default():
    settings = Settings.from_env({name: value for name, value in BASE.items() if name != "LOCAL_DOMAINS"})

    assert settings.discover_domains is True
    assert settings.local_domains == ()


def test_discover_domains_takes_true_or_false_and_refuses_anything_else():
    assert Settings.from_env({**BASE, "DISCOVER_DOMAINS": "False"}).discover_domains is False
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, "DISCOVER_DOMAINS": "sometimes"})

    assert str(caught.value) == "setting DISCOVER_DOMAINS: must be on or off (or true/false), got 'sometimes'"


def test_a_bad_local_domains_value_is_still_refused_while_discovery_is_on():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, "LOCAL_DOMAINS": "not a domain"})

    assert caught.value.setting == "LOCAL_DOMAINS"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("OVERLAP_LOOKBACK_MINUTES", "ten", "must be a number"),
        ("MAX_SLICE_HOURS", "500", "between 0.1 and 240"),
        ("INGESTION_ENDPOINT", "http://plain.example", "https://"),
        ("DCR_IMMUTABLE_ID", "my-dcr", "DCR immutable id"),
        ("GRAPH_AUTH_MODE", "password", "one of managed_identity"),
        ("CHECKPOINT_CONTAINER", "Bad_Name", "container name"),
        ("LOCAL_DOMAINS", "not a domain", "mail domains"),
    ],
)
def test_bad_value_is_named_with_what_is_wrong(name, value, fragment):
    with pytest.raises(ConfigError, match=f"setting {name}: .*{fragment}"):
        Settings.from_env({**BASE, name: value})


def test_initial_lookback_shorter_than_the_overlap_is_refused_naming_both():
    with pytest.raises(ConfigError, match="setting INITIAL_LOOKBACK_HOURS: .*OVERLAP_LOOKBACK_MINUTES"):
        Settings.from_env({**BASE, "INITIAL_LOOKBACK_HOURS": "0.5", "OVERLAP_LOOKBACK_MINUTES": "60"})


def test_initial_lookback_equal_to_the_overlap_is_accepted():
    settings = Settings.from_env({**BASE, "INITIAL_LOOKBACK_HOURS": "1", "OVERLAP_LOOKBACK_MINUTES": "60"})

    assert settings.initial_lookback == settings.overlap_lookback


def test_local_domains_in_unicode_upper_case_or_with_a_trailing_dot_are_normalised_at_load():
    settings = Settings.from_env(
        {**BASE, "LOCAL_DOMAINS": "Bücher.Example., CONTOSO.com., @fabrikam.com, xn--bcher-kva.example"}
    )

    assert settings.local_domains == ("xn--bcher-kva.example", "contoso.com", "fabrikam.com")


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("contoso.com, ☃.example", "'☃.example' is not a domain (IDNA 2008 refuses it: Codepoint U+2603"),
        ("contoso.com,not a domain", "'not a domain' is not a domain name"),
        ("bücher", "'bücher' is not a domain name"),
    ],
)
def test_local_domain_that_cannot_be_a_domain_is_refused_in_one_line_naming_it(value, named):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, "LOCAL_DOMAINS": value})

    message = str(caught.value)
    assert message.startswith("setting LOCAL_DOMAINS: must be a comma-separated list of mail domains")
    assert named in message
    assert "\n" not in message
    assert "'contoso.com'" not in message  # only the bad entry is named


def test_client_secret_mode_requires_client_id_and_secret():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, "GRAPH_AUTH_MODE": "client_secret"})

    assert {name for name, _ in caught.value.problems} == {"CLIENT_ID", "CLIENT_SECRET"}


def test_secrets_are_not_in_repr():
    settings = Settings.from_env(
        {
            **BASE,
            "GRAPH_AUTH_MODE": "client_secret",
            "CLIENT_ID": "app",
            "CLIENT_SECRET": "s3cr3t-value",
            "STORAGE_CONNECTION_STRING": "AccountKey=very-secret-key",
        }
    )

    assert "s3cr3t-value" not in repr(settings)
    assert "very-secret-key" not in repr(settings)


def test_file_store_needs_no_storage_account():
    env = {k: v for k, v in BASE.items() if k != "STORAGE_ACCOUNT_URL"}

    settings = Settings.from_env({**env, "CHECKPOINT_STORE": "file", "CHECKPOINT_DIRECTORY": "state-dir"})

    assert settings.checkpoint.directory == "state-dir"


def test_timer_schedule_defaults_to_every_five_minutes_and_rejects_five_fields():
    assert timer_schedule({}) == "0 */5 * * * *"
    with pytest.raises(ConfigError, match="TIMER_SCHEDULE"):
        timer_schedule({"TIMER_SCHEDULE": "*/5 * * * *"})


def test_a_bad_setting_holding_a_sas_is_named_without_the_sas():
    bad = "ftp://acct.blob.core.windows.net/?sv=2026-10-06&sig=SECRETSIG%3D"

    with pytest.raises(ConfigError, match="setting STORAGE_ACCOUNT_URL: must be an http") as caught:
        Settings.from_env({**BASE, "STORAGE_ACCOUNT_URL": bad})

    assert "SECRETSIG" not in str(caught.value)


def test_developer_sign_in_is_accepted_for_storage_and_ingestion_without_an_app():
    settings = Settings.from_env({**BASE, "AZURE_AUTH_MODE": "developer"})

    assert settings.azure_auth_mode is AuthMode.DEVELOPER
    assert settings.credentials.client_id is None


def test_developer_sign_in_for_graph_is_refused_because_message_trace_needs_the_app_permission():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, "GRAPH_AUTH_MODE": "developer"})

    assert caught.value.setting == "GRAPH_AUTH_MODE"
    assert "application permission ExchangeMessageTrace.Read.All" in str(caught.value)
    assert "client_secret or client_certificate" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AUTHORITY_HOST", "https://login.microsoftonline.us"),
        ("AUTHORITY_HOST", "https://login.chinacloudapi.cn/"),
        ("GRAPH_BASE_URL", "https://graph.microsoft.us"),
        ("GRAPH_BASE_URL", "https://dod-graph.microsoft.us"),
        ("GRAPH_BASE_URL", "https://microsoftgraph.chinacloudapi.cn"),
    ],
)
def test_a_national_cloud_is_refused_at_start_since_message_trace_is_global_only(name, value):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, name: value})

    assert caught.value.setting == name
    assert "served by the global service only" in str(caught.value)


def test_health_rows_are_on_by_default_on_their_own_stream_and_can_be_turned_off():
    default = Settings.from_env(BASE)
    off = Settings.from_env({**BASE, "HEALTH_ROWS": "Off"})

    assert (default.health_rows, default.health_stream_name) == (True, "Custom-MessageTraceHealth")
    assert off.health_rows is False
    with pytest.raises(ConfigError, match="setting HEALTH_ROWS: must be on or off"):
        Settings.from_env({**BASE, "HEALTH_ROWS": "sometimes"})


def test_health_rows_into_the_mail_stream_are_refused():
    with pytest.raises(ConfigError, match="setting HEALTH_STREAM_NAME: must differ from DCR_STREAM_NAME"):
        Settings.from_env({**BASE, "HEALTH_STREAM_NAME": "Custom-EmailEvents"})
