"""Many tenants, one deployment: the TENANTS setting, tenant-scoped settings, and the tick's messages."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from connector.errors import ConfigError, ErrorKind
from connector.fanout import (
    TenantRun,
    TenantRunMessageError,
    decode_tenant_run,
    encode_tenant_run,
    last_run_started,
    superseded,
    tick_runs,
)
from connector.queued import SliceMessage, SliceMessageError, decode_message, encode_message
from connector.settings import AuthMode, Settings, StoreKind
from connector.state import FeedProgress

HOME = "00000000-0000-0000-0000-000000000001"
CONTOSO = "11111111-2222-3333-4444-555555555555"
FABRIKAM = "66666666-7777-8888-9999-aaaaaaaaaaaa"
BASE = {
    "TENANT_ID": HOME,
    "LOCAL_DOMAINS": "provider.example",
    "INGESTION_ENDPOINT": "https://shared.ingest.monitor.azure.com",
    "DCR_IMMUTABLE_ID": "dcr-0123456789abcdef0123456789abcdef",
    "WORKSPACE_ID": "abcdefab-0000-0000-0000-000000000000",
    "STORAGE_ACCOUNT_URL": "https://acct.blob.core.windows.net",
    "GRAPH_AUTH_MODE": "federated_identity",
    "CLIENT_ID": "99999999-0000-0000-0000-000000000000",
}
OWN = {
    "name": "fabrikam",
    "tenantId": FABRIKAM.upper(),
    "ingestionEndpoint": "https://fabrikam.ingest.monitor.azure.com",
    "dcrImmutableId": "dcr-ffffffffffffffffffffffffffffffff",
    "workspaceId": "fabfabfa-0000-0000-0000-000000000000",
    "localDomains": ["Fabrikam.COM"],
    "graphQuotaRequests": 80,
    "graphQuotaHeadroom": 20,
}


def settings_with(*entries: dict[str, object], **extra: str) -> Settings:
    return Settings.from_env({**BASE, "TENANTS": json.dumps(list(entries)), **extra})


def problems(*entries: object, **extra: str) -> str:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**BASE, "TENANTS": json.dumps(list(entries)), **extra})
    return str(caught.value)


def test_without_tenants_the_deployment_reads_its_own_tenant_and_rows_carry_its_id():
    settings = Settings.from_env(BASE)

    assert not settings.multi_tenant
    assert settings.graph_tenant_id == HOME
    assert settings.source_tenant_id == HOME


def test_a_tenant_id_given_as_a_domain_leaves_source_tenant_id_empty():
    assert Settings.from_env({**BASE, "TENANT_ID": "contoso.onmicrosoft.com"}).source_tenant_id == ""


def test_a_shared_destination_tenant_keeps_the_deployment_table_and_workspace_and_gets_its_own_container():
    settings = settings_with({"name": "contoso", "tenantId": CONTOSO}).for_tenant("contoso")

    assert settings.tenant is not None
    assert not settings.tenant.own_destination
    assert settings.graph_tenant_id == CONTOSO
    assert settings.credentials.tenant_id == HOME  # storage, ingestion and query: the deployment's identity
    assert settings.source_tenant_id == CONTOSO
    assert settings.checkpoint.container == "message-trace-connector-contoso"
    assert settings.dcr_immutable_id == BASE["DCR_IMMUTABLE_ID"]
    assert settings.workspace_id == BASE["WORKSPACE_ID"]
    # The provider's own domains are not the customer's: discovery (or localDomains) decides.
    assert settings.local_domains == ()
    assert settings.graph_quota.limit == 100


def test_an_own_destination_tenant_gets_its_dcr_workspace_domains_and_quota():
    settings = settings_with({"name": "contoso", "tenantId": CONTOSO}, OWN).for_tenant("fabrikam")

    assert settings.source_tenant_id == FABRIKAM  # lower case, whatever the entry's case
    assert settings.ingestion_endpoint == OWN["ingestionEndpoint"]
    assert settings.dcr_immutable_id == OWN["dcrImmutableId"]
    assert settings.workspace_id == OWN["workspaceId"]
    assert settings.local_domains == ("fabrikam.com",)
    assert (settings.graph_quota.limit, settings.graph_quota.headroom) == (80, 20)


def test_an_own_destination_without_a_workspace_is_not_verified_in_the_deployment_workspace():
    entry = {key: value for key, value in OWN.items() if key != "workspaceId"}

    assert settings_with(entry).for_tenant("fabrikam").workspace_id is None


def test_the_file_store_keeps_each_tenant_in_its_own_directory():
    settings = settings_with(
        {"name": "contoso", "tenantId": CONTOSO}, CHECKPOINT_STORE="file", CHECKPOINT_DIRECTORY="state"
    ).for_tenant("contoso")

    assert settings.checkpoint.kind is StoreKind.FILE
    assert settings.checkpoint.directory == "state/tenants/contoso"


def test_an_unknown_tenant_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="there are: contoso"):
        settings_with({"name": "contoso", "tenantId": CONTOSO}).for_tenant("nope")


def test_every_bad_entry_and_field_is_named_in_one_line():
    text = problems(
        {"name": "Contoso", "tenantId": "contoso.com", "colour": "blue"},
        {"name": "fabrikam", "tenantId": FABRIKAM, "ingestionEndpoint": "https://x.example"},
        {"name": "ok", "tenantId": CONTOSO, "graphQuotaRequests": "100", "enabled": "yes"},
    )

    assert "entry 1 (Contoso): unknown keys colour" in text
    assert "name must be 1-24 lower-case letters" in text
    assert "tenantId must be the tenant's GUID" in text
    assert "entry 2 (fabrikam): ingestionEndpoint and dcrImmutableId go together" in text
    assert "graphQuotaRequests must be a whole number" in text
    assert "enabled must be true or false" in text


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("{not json", "must be a JSON array of tenants"),
        ('{"name": "contoso"}', "must be a JSON array"),
        ("[42]", "entry 1: must be an object"),
    ],
)
def test_a_tenants_value_that_is_not_a_list_of_objects_is_refused(raw, expected):
    with pytest.raises(ConfigError, match=expected):
        Settings.from_env({**BASE, "TENANTS": raw})


def test_the_same_name_or_tenant_twice_is_refused():
    text = problems(
        {"name": "contoso", "tenantId": CONTOSO},
        {"name": "contoso", "tenantId": FABRIKAM},
        {"name": "other", "tenantId": CONTOSO.upper()},
    )

    assert "name contoso appears twice" in text
    assert f"tenantId {CONTOSO} appears twice" in text


def test_a_managed_identity_cannot_read_other_tenants():
    text = problems({"name": "contoso", "tenantId": CONTOSO}, GRAPH_AUTH_MODE="managed_identity")

    assert "GRAPH_AUTH_MODE" in text
    assert "federated_identity" in text


def test_federated_identity_is_for_graph_only_and_needs_the_app_registration():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(
            {**{k: v for k, v in BASE.items() if k != "CLIENT_ID"}, "AZURE_AUTH_MODE": "federated_identity"}
        )

    names = {name for name, _ in caught.value.problems}
    assert names == {"AZURE_AUTH_MODE", "CLIENT_ID"}
    assert Settings.from_env(BASE).graph_auth_mode is AuthMode.FEDERATED_IDENTITY


def test_tenant_settings_that_contradict_the_deployment_are_refused():
    text = problems(
        {"name": "contoso", "tenantId": CONTOSO, "graphQuotaHeadroom": 100},
        {"name": "x" * 24, "tenantId": FABRIKAM},
        DISCOVER_DOMAINS="off",
        CHECKPOINT_CONTAINER="c" * 40,
        TENANT_QUEUE="backfill-slices",
    )

    assert "tenant contoso: needs localDomains, since DISCOVER_DOMAINS is off" in text
    assert "tenant contoso: graphQuotaHeadroom (100) must be below its graphQuotaRequests (100)" in text
    assert f"tenant {'x' * 24}: its checkpoint container" in text
    assert "TENANT_QUEUE: must differ from BACKFILL_QUEUE" in text


def test_the_store_commands_see_a_bad_tenant_list_too():
    with pytest.raises(ConfigError, match="TENANTS"):
        Settings.for_storage({"STORAGE_ACCOUNT_URL": BASE["STORAGE_ACCOUNT_URL"], "TENANTS": "[1]"})


# ---- the tick's messages ---------------------------------------------------------------------

TICK = datetime(2026, 11, 25, 10, 5, tzinfo=UTC)


def test_a_tick_enqueues_one_run_per_enabled_tenant_in_list_order():
    settings = settings_with(
        {"name": "contoso", "tenantId": CONTOSO},
        {"name": "paused", "tenantId": HOME, "enabled": False},
        OWN,
    )

    assert tick_runs(settings.tenants, TICK) == [TenantRun("contoso", TICK), TenantRun("fabrikam", TICK)]


def test_a_tenant_run_message_round_trips():
    run = TenantRun("contoso", TICK)

    assert decode_tenant_run(encode_tenant_run(run)) == run
    assert decode_tenant_run(encode_tenant_run(run).encode()) == run


@pytest.mark.parametrize(
    "body",
    [
        b"\xff",
        "not json",
        '{"v":1,"job":"backfill/a_b","start":"x","end":"y"}',  # a slice message on the wrong queue
        '{"v":1,"kind":"tenant-run","tenant":"Bad Name","tick":"2026-11-25T10:05:00Z"}',
        '{"v":1,"kind":"tenant-run","tenant":"contoso","tick":"yesterday"}',
    ],
)
def test_anything_else_on_the_tenant_queue_fails_for_good_without_quoting_it(body):
    with pytest.raises(TenantRunMessageError) as caught:
        decode_tenant_run(body)

    assert caught.value.kind is ErrorKind.FATAL
    assert "Bad Name" not in str(caught.value)
    assert "yesterday" not in str(caught.value)


def live(started: str | None, outcome: str = "completed") -> FeedProgress:
    return FeedProgress(
        feed="live", last_run=None if started is None else {"started": started, "outcome": outcome}
    )


def test_a_run_that_started_at_or_after_the_tick_and_did_not_fail_supersedes_its_message():
    run = TenantRun("contoso", TICK)

    assert superseded(run, live("2026-11-25T10:05:00Z"))
    assert superseded(run, live("2026-11-25T10:05:01Z", "throttled"))
    assert not superseded(run, live("2026-11-25T10:04:59Z"))
    assert not superseded(run, live("2026-11-25T10:06:00Z", "failed"))  # the host's retry runs again
    assert not superseded(run, live(None))
    assert not superseded(run, None)
    assert not superseded(run, live("garbled"))


def test_the_last_run_start_is_read_from_the_checkpoint():
    assert last_run_started({"started": "2026-11-25T10:06:00Z"}) == TICK + timedelta(minutes=1)
    assert last_run_started({}) is None


def test_a_slice_message_carries_its_tenant_and_an_old_message_has_none():
    start = TICK - timedelta(days=2)
    message = SliceMessage(
        f"backfill/{start:%Y%m%dT%H%M%SZ}_{TICK:%Y%m%dT%H%M%SZ}", start, TICK, tenant="contoso"
    )
    untenanted = SliceMessage(message.job, start, TICK)

    assert decode_message(encode_message(message)) == message
    assert "tenant" not in encode_message(untenanted)
    assert decode_message(encode_message(untenanted)).tenant is None
    with pytest.raises(SliceMessageError, match="names no tenant"):
        decode_message(encode_message(message).replace('"contoso"', '"Not A Tenant"'))


def test_the_tenant_a_single_tenant_deployment_read_continues_in_its_container():
    settings = settings_with(
        {"name": "home", "tenantId": HOME, "useDeploymentContainer": True},
        {"name": "contoso", "tenantId": CONTOSO},
    )

    assert settings.for_tenant("home").checkpoint.container == "message-trace-connector"
    assert settings.for_tenant("contoso").checkpoint.container == "message-trace-connector-contoso"
    file_store = settings_with(
        {"name": "home", "tenantId": HOME, "useDeploymentContainer": True},
        CHECKPOINT_STORE="file",
        CHECKPOINT_DIRECTORY="state",
    )
    assert file_store.for_tenant("home").checkpoint.directory == "state"


def test_only_one_tenant_can_continue_the_deployment_feed():
    text = problems(
        {"name": "home", "tenantId": HOME, "useDeploymentContainer": True},
        {"name": "contoso", "tenantId": CONTOSO, "useDeploymentContainer": True},
    )

    assert "useDeploymentContainer is set for home, contoso" in text
