"""The app settings the templates set are exactly the connector settings a deployment needs."""

import re

import pytest

from connector.settings import DEFAULT_TIMER_SCHEDULE, Settings, timer_schedule
from tests.infra.bicep import (
    MAIN,
    ROOT,
    accessor_path,
    body,
    condition,
    declared_params,
    module,
    nodes,
    parse,
)

# Settings the connector reads that the templates deliberately leave unset, and why.
NOT_SET_BY_TEMPLATES = {
    "CLIENT_CERTIFICATE_PATH": "client_certificate mode reads a PEM file, which Flex Consumption cannot "
    "mount from Key Vault; the templates offer managed_identity and client_secret",
    "CLIENT_CERTIFICATE_PASSWORD": "client_certificate mode (see CLIENT_CERTIFICATE_PATH)",
    "STORAGE_CONNECTION_STRING": "account keys are disabled; STORAGE_ACCOUNT_URL with the identity instead",
    "CHECKPOINT_DIRECTORY": "the file store is for local runs",
    "DISCOVER_DOMAINS": "default true (the grant gives Domain.Read.All); false through extraConnectorSettings",
    "REQUESTS_CA_BUNDLE": "extra CA bundle for local simulators only",
    "SSL_CERT_FILE": "extra CA bundle for local simulators only",
    "AUTHORITY_HOST": "public cloud default; Graph message trace exists in the global cloud only",
    "GRAPH_BASE_URL": "public cloud default",
    "GRAPH_SCOPE": "public cloud default",
    "INGESTION_SCOPE": "public cloud default",
    "LOGS_QUERY_ENDPOINT": "public cloud default",
    "LOGS_QUERY_SCOPE": "public cloud default",
    "OVERLAP_LOOKBACK_MINUTES": "tuning, default works; extraConnectorSettings",
    "SETTLE_DELAY_MINUTES": "tuning, default works; extraConnectorSettings",
    "SHORT_LOOKBACK_MINUTES": "tuning, default works; extraConnectorSettings",
    "FULL_REREAD_MINUTES": "tuning, default works; extraConnectorSettings",
    "INITIAL_LOOKBACK_HOURS": "tuning, default works; extraConnectorSettings",
    "MAX_SLICE_HOURS": "tuning, default works; extraConnectorSettings",
    "TARGET_RECORDS_PER_SLICE": "tuning, default works; extraConnectorSettings",
    "MAX_PAGES_PER_SLICE": "tuning, default works; extraConnectorSettings",
    "RUN_TIME_BUDGET_SECONDS": "tuning, default (420 s) fits functionTimeout (10 min); extraConnectorSettings",
    "HTTP_TIMEOUT_SECONDS": "tuning, default works; extraConnectorSettings",
    "HTTP_MAX_RETRIES": "tuning, default works; extraConnectorSettings",
    "HTTP_RETRY_BACKOFF_SECONDS": "tuning, default works; extraConnectorSettings",
    "LEDGER_WARN_ENTRIES": "tuning, default works; extraConnectorSettings",
    "CHECKPOINT_JOURNAL_MIN_KIB": "tuning, default works; extraConnectorSettings",
    "LOCK_LEASE_SECONDS": "tuning, default works; extraConnectorSettings",
    "VERIFY_INGESTION_DELAY_MINUTES": "tuning, default works; extraConnectorSettings",
    "HEALTH_ROWS": "on by default (the health table and stream are always deployed); extraConnectorSettings to turn off",
    "DETAIL_MAX_REQUESTS": "tuning of the enrich command (run from a laptop or playbook host), default works",
    "GRAPH_QUOTA_REQUESTS": "Graph's documented 100 per 5 minutes; extraConnectorSettings",
    "GRAPH_QUOTA_WINDOW_SECONDS": "Graph's documented 300 s; extraConnectorSettings",
    "GRAPH_QUOTA_HEADROOM": "default 0; extraConnectorSettings to leave requests to admins' own searches",
    "GRAPH_QUOTA_LIVE_RESERVE_PERCENT": "tuning, default (20 %) works; extraConnectorSettings",
}

PLATFORM_SETTINGS = {
    "AzureWebJobsStorage__accountName",
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
}
# Settings a Flex Consumption app must not have, or that would bring keys back.
FORBIDDEN_SETTINGS = {
    "AzureWebJobsStorage",
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "APPINSIGHTS_INSTRUMENTATIONKEY",
}


def _settings_read_by_code() -> set[str]:
    code = (ROOT / "connector" / "settings.py").read_text()
    return set(re.findall(r'"([A-Z][A-Z0-9_]{3,})"', code))


def _union_args() -> list:
    function = parse(MAIN)["variables"]["connectorSettings"]["value"]["function"]
    assert function["type"] == "union"
    return list(function["parameters"].values())


def _connector_settings() -> dict[str, tuple[object, str | None]]:
    """Setting name -> (value node, condition that must hold for it to be set)."""
    args = _union_args()
    assert args[0] == "extraConnectorSettings", "extra settings must come first so wired ones win"
    found: dict[str, tuple[object, str | None]] = {}
    for arg in args[1:]:
        if "operator" in arg:
            operands = arg["operator"]["operands"]
            assert arg["operator"]["type"] == "conditional"
            assert operands["false_value"] == {}
            for name, value in operands["true_value"].items():
                found[name] = (value, operands["condition"])
        else:
            for name, value in arg.items():
                found[name] = (value, None)
    return found


def _platform_settings() -> set[str]:
    return set(module("functionapp")["variables"]["platformSettings"]["value"])


def test_app_settings_are_the_connector_settings_plus_the_platform_settings():
    functionapp = module("functionapp")
    union = functionapp["variables"]["appSettings"]["value"]["function"]
    assert union["type"] == "union"
    assert list(union["parameters"].values()) == ["connectorSettings", "platformSettings"]
    site = body(functionapp["resources"]["site"])
    loop = site["properties"]["siteConfig"]["appSettings"]
    assert loop["loop_type"]["detail"]["array_name"]["function"]["type"] == "items"
    assert loop["loop_type"]["detail"]["array_name"]["function"]["parameters"] == {"arg_1": "appSettings"}
    assert not [r for r in functionapp["resources"].values() if r["type"] == "Microsoft.Web/sites/config"]
    assert body(parse(MAIN)["modules"]["functionApp"])["params"]["connectorSettings"] == "connectorSettings"


def test_every_app_setting_is_a_connector_setting_or_a_platform_setting():
    read = _settings_read_by_code()
    connector = set(_connector_settings())
    assert connector <= read, f"not read by the connector: {sorted(connector - read)}"
    assert _platform_settings() == PLATFORM_SETTINGS
    assert not (connector | PLATFORM_SETTINGS) & FORBIDDEN_SETTINGS


def test_every_connector_setting_is_set_or_deliberately_left_out():
    read = _settings_read_by_code()
    connector = set(_connector_settings())
    assert not connector & set(NOT_SET_BY_TEMPLATES)
    assert connector | set(NOT_SET_BY_TEMPLATES) == read, (
        f"decide for {sorted(read - connector - set(NOT_SET_BY_TEMPLATES))}; "
        f"stale: {sorted((connector | set(NOT_SET_BY_TEMPLATES)) - read)}"
    )


def test_no_setting_like_key_is_set_anywhere_else():
    """Guards against app settings added outside connectorSettings / platformSettings."""
    allowed = set(_connector_settings()) | PLATFORM_SETTINGS
    for path in sorted((ROOT / "infra").rglob("*.bicep")):
        parsed = parse(path)
        for section in ("variables", "resources", "modules"):
            for node in nodes(parsed.get(section, {})):
                if isinstance(node, dict):
                    for key in node:
                        if re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+|AzureWebJobs\w*", key):
                            assert key in allowed, f"{path.name}: unexpected setting {key}"


def _dotted(node: object) -> str:
    return ".".join(accessor_path(node))


def test_resource_outputs_are_wired_not_hand_built():
    settings = _connector_settings()
    wired = {
        "INGESTION_ENDPOINT": "dcr.outputs.logsIngestionEndpoint",
        "DCR_IMMUTABLE_ID": "dcr.outputs.immutableId",
        "DCR_STREAM_NAME": "schema.stream",
        "HEALTH_STREAM_NAME": "healthSchema.stream",
        "DETAIL_STREAM_NAME": "detailSchema.stream",
        "STORAGE_ACCOUNT_URL": "storage.outputs.blobEndpoint",
        "MANAGED_IDENTITY_CLIENT_ID": "identity.outputs.clientId",
        "WORKSPACE_ID": "workspace.outputs.customerId",
        "CLIENT_SECRET": "keyVault.outputs.clientCredentialReference",
        "SUBJECT_HASH_KEY": "keyVault.outputs.subjectHashKeyReference",
        "TENANTS": "tenantSettings.outputs.json",
    }
    for name, expected in wired.items():
        assert _dotted(settings[name][0]) == expected, name

    dcr_outputs = module("dcr")["outputs"]
    assert _dotted(dcr_outputs["logsIngestionEndpoint"]["value"]) == "dcr.properties.endpoints.logsIngestion"
    assert _dotted(dcr_outputs["immutableId"]["value"]) == "dcr.properties.immutableId"
    blob = module("storage")["outputs"]["blobEndpoint"]["value"]
    assert _dotted(blob) == "account.properties.primaryEndpoints.blob"
    customer = module("workspace")["outputs"]["customerId"]["value"]["operator"]
    assert customer["type"] == "conditional"
    assert _dotted(customer["operands"]["true_value"]) == "existingWorkspace.properties.customerId"
    assert _dotted(customer["operands"]["false_value"]) == "newWorkspace.properties.customerId"
    reference = module("keyvault")["outputs"]["clientCredentialReference"]["value"]
    assert reference.startswith("@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/")
    for path in sorted((ROOT / "infra").rglob("*.bicep")):
        text = path.read_text()
        for host in ("ingest.monitor.azure.com", "blob.core.windows.net", "vault.azure.net"):
            assert host not in text, f"{path.name} hand-builds a {host} hostname"


def test_conditional_settings():
    settings = _connector_settings()
    assert settings["WORKSPACE_ID"][1] == "enableWorkspaceVerification"
    assert settings["CLIENT_ID"][1] == "usesClientId"
    assert settings["CLIENT_SECRET"][1] == "isClientSecret"
    assert settings["SUBJECT_HASH_KEY"][1] == "isSubjectHash"
    assert settings["TENANTS"][1] == "hasTenants"
    unconditional = {name for name, (_, cond) in settings.items() if cond is None}
    assert unconditional == {
        "TENANT_ID",
        "LOCAL_DOMAINS",
        "GRAPH_AUTH_MODE",
        "AZURE_AUTH_MODE",
        "MANAGED_IDENTITY_CLIENT_ID",
        "INGESTION_ENDPOINT",
        "DCR_IMMUTABLE_ID",
        "DCR_STREAM_NAME",
        "HEALTH_STREAM_NAME",
        "DETAIL_STREAM_NAME",
        "CHECKPOINT_STORE",
        "STORAGE_ACCOUNT_URL",
        "CHECKPOINT_CONTAINER",
        "BACKFILL_QUEUE",
        "TENANT_QUEUE",
        "TIMER_SCHEDULE",
        "SUBJECT_MODE",
    }
    main = parse(MAIN)
    assert main["variables"]["isClientSecret"]["value"]["operator"]["type"] == "equals"
    assert main["variables"]["isFederated"]["value"]["operator"]["type"] == "equals"
    uses = main["variables"]["usesClientId"]["value"]["operator"]
    assert uses == {"type": "or", "operands": {"operand_1": "isClientSecret", "operand_2": "isFederated"}}
    has_tenants = main["variables"]["hasTenants"]["value"]["operator"]
    assert has_tenants["type"] == "not"
    assert has_tenants["operands"]["bool_value"]["function"]["type"] == "empty"
    assert condition(main["modules"]["keyVault"]) == "deployKeyVault"


FAKE_OUTPUTS = {
    "TENANT_ID": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "MANAGED_IDENTITY_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
    "INGESTION_ENDPOINT": "https://dcr-0123456789abcdef-westeurope-1.ingest.monitor.azure.com",
    "DCR_IMMUTABLE_ID": "dcr-0123456789abcdef0123456789abcdef",
    "DCR_STREAM_NAME": "Custom-EmailEvents",
    "HEALTH_STREAM_NAME": "Custom-MessageTraceHealth",
    "DETAIL_STREAM_NAME": "Custom-MessageTraceDetail",
    "STORAGE_ACCOUNT_URL": "https://stmsgtraceabc.blob.core.windows.net/",
    "WORKSPACE_ID": "66666666-7777-8888-9999-000000000000",
    "CLIENT_SECRET": "@Microsoft.KeyVault(SecretUri=https://kv-x.vault.azure.net/secrets/graph-client-secret/)",
    # What the Functions host hands the connector once it resolved the Key Vault reference.
    "SUBJECT_HASH_KEY": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
}


def _app_settings(
    overrides: dict[str, object],
    *,
    verification: bool,
    client_secret: bool,
    subject_hash: bool = False,
    federated: bool = False,
    tenants_json: str | None = None,
) -> dict[str, str]:
    """The connector app settings a deployment produces, with fake resource outputs."""
    params = {name: default for name, default in declared_params(parse(MAIN)).items()}
    params.update(overrides)
    env: dict[str, str] = {}
    for name, (value, cond) in _connector_settings().items():
        if cond == "enableWorkspaceVerification" and not verification:
            continue
        if cond == "isClientSecret" and not client_secret:
            continue
        if cond == "usesClientId" and not (client_secret or federated):
            continue
        if cond == "isSubjectHash" and not subject_hash:
            continue
        if cond == "hasTenants":
            if tenants_json is not None:
                env[name] = tenants_json
            continue
        if name in FAKE_OUTPUTS:
            env[name] = FAKE_OUTPUTS[name]
        elif isinstance(value, str):
            resolved = params.get(value, value)
            env[name] = str(resolved)
        else:
            raise AssertionError(f"no fake value for {name}")
    return env


def test_managed_identity_deployment_settings_are_valid_for_the_connector():
    env = _app_settings({"localDomains": "contoso.com"}, verification=True, client_secret=False)
    settings = Settings.from_env(env)
    assert settings.graph_auth_mode.value == settings.azure_auth_mode.value == "managed_identity"
    assert settings.credentials.managed_identity_client_id == FAKE_OUTPUTS["MANAGED_IDENTITY_CLIENT_ID"]
    assert settings.workspace_id == FAKE_OUTPUTS["WORKSPACE_ID"]
    assert settings.dcr_stream_name == "Custom-EmailEvents"
    assert settings.checkpoint.account_url == FAKE_OUTPUTS["STORAGE_ACCOUNT_URL"].rstrip("/")
    assert settings.checkpoint.container == "message-trace-connector"
    assert "CLIENT_ID" not in env
    assert "CLIENT_SECRET" not in env
    assert timer_schedule(env) == DEFAULT_TIMER_SCHEDULE


def test_client_secret_deployment_settings_are_valid_for_the_connector():
    env = _app_settings(
        {"localDomains": "contoso.com", "graphAuthMode": "client_secret", "clientId": "app-id"},
        verification=False,
        client_secret=True,
    )
    settings = Settings.from_env(env)
    assert settings.graph_auth_mode.value == "client_secret"
    assert settings.azure_auth_mode.value == "managed_identity"
    assert settings.credentials.client_id == "app-id"
    assert settings.workspace_id is None


def test_subject_mode_defaults_to_keep_and_hash_mode_reads_its_key_from_key_vault():
    main = parse(MAIN)
    assert declared_params(main)["subjectMode"] == "keep"
    keep = Settings.from_env(
        _app_settings({"localDomains": "contoso.com"}, verification=True, client_secret=False)
    )
    assert keep.subjects.mode.value == "keep"
    env = _app_settings(
        {"localDomains": "contoso.com", "subjectMode": "hash"},
        verification=True,
        client_secret=False,
        subject_hash=True,
    )
    assert Settings.from_env(env).subjects.mode.value == "hash"
    assert main["variables"]["isSubjectHash"]["value"]["operator"]["type"] == "equals"
    # The vault exists whenever hash mode needs it, like for a client secret.
    assert "isSubjectHash" in str(main["variables"]["deployKeyVault"]["value"])
    reference = module("keyvault")["outputs"]["subjectHashKeyReference"]["value"]
    assert reference.startswith("@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/")
    assert body(main["modules"]["keyVault"])["params"]["subjectHashKey"] == "subjectHashKey"


@pytest.mark.parametrize(
    ("param", "expected"),
    [("timerSchedule", DEFAULT_TIMER_SCHEDULE), ("checkpointContainerName", "message-trace-connector")],
)
def test_template_defaults_match_connector_defaults(param, expected):
    assert declared_params(parse(MAIN))[param] == expected
    minimal = Settings.from_env(
        {
            "TENANT_ID": "contoso.com",
            "LOCAL_DOMAINS": "contoso.com",
            "INGESTION_ENDPOINT": "https://x.ingest.monitor.azure.com",
            "DCR_IMMUTABLE_ID": "dcr-" + "0" * 32,
            "STORAGE_ACCOUNT_URL": "https://x.blob.core.windows.net",
        }
    )
    assert minimal.checkpoint.container == "message-trace-connector"
    assert minimal.dcr_stream_name == "Custom-EmailEvents"


def test_host_storage_is_identity_based():
    platform = module("functionapp")["variables"]["platformSettings"]["value"]
    assert platform["AzureWebJobsStorage__credential"] == "managedidentity"
    assert platform["AzureWebJobsStorage__clientId"] == "identityClientId"
    storage = body(module("storage")["resources"]["account"])
    assert storage["properties"]["allowSharedKeyAccess"] is False
    assert storage["properties"]["allowBlobPublicAccess"] is False
    site = body(module("functionapp")["resources"]["site"])
    assert site["properties"]["keyVaultReferenceIdentity"] == "identityResourceId"
    runtime = site["properties"]["functionAppConfig"]["runtime"]
    assert runtime == {"name": "python", "version": "3.11"}
    deployment = site["properties"]["functionAppConfig"]["deployment"]["storage"]
    assert deployment["authentication"]["type"] == "UserAssignedIdentity"
    plan = body(module("functionapp")["resources"]["plan"])
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    containers = body(parse(MAIN)["modules"]["storage"])["params"]["containerNames"]
    assert containers[0] == "checkpointContainerName"
