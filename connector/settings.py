"""Connector settings: read from the environment when a run starts, never at import.

``Settings.from_env`` reads every setting, checks it, and raises one
:class:`~connector.errors.ConfigError` that names every bad or missing setting,
so a misconfigured deployment fails on its first run with a message that says
exactly what to fix instead of a strange HTTP error later. The README's settings
table lists the same names and defaults as ``SETTINGS_DOC`` below (a test keeps
them in step).

Secrets (client secret, certificate password, storage connection string, subject
hash key) are kept out of ``repr`` so a logged ``Settings`` never leaks them.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import TypeVar
from urllib.parse import urlsplit

from connector.domains import local_domain
from connector.errors import ConfigError
from connector.quota import QuotaPolicy
from connector.subjects import KEEP_SUBJECTS, KEY_FORMAT, SubjectMode, SubjectPolicy, parse_hash_key

logger = logging.getLogger(__name__)

DEFAULT_TIMER_SCHEDULE = "0 */5 * * * *"
DEFAULT_SHORT_LOOKBACK = timedelta(minutes=10)
GRAPH_RETENTION = timedelta(days=90)
GRAPH_MAX_WINDOW = timedelta(days=10)

_T = TypeVar("_T")
_E = TypeVar("_E", bound=enum.Enum)


class AuthMode(enum.Enum):
    """How the connector proves who it is to Entra ID."""

    MANAGED_IDENTITY = "managed_identity"
    CLIENT_SECRET = "client_secret"  # noqa: S105 - a mode name, not a secret
    CLIENT_CERTIFICATE = "client_certificate"
    DEVELOPER = "developer"  # your own `az login` (AzureCliCredential): storage, ingestion, query only
    # Graph only: the managed identity's token for api://AzureADTokenExchange is the client assertion of the
    # app registration CLIENT_ID (a federated credential), in whichever tenant the app is consented: no secret.
    FEDERATED_IDENTITY = "federated_identity"


class StoreKind(enum.Enum):
    """Where the checkpoint lives."""

    BLOB = "blob"
    FILE = "file"


@dataclass(frozen=True, slots=True)
class Credentials:
    """The identity the connector uses; one app registration or managed identity."""

    tenant_id: str
    client_id: str | None
    client_secret: str | None = field(default=None, repr=False)
    certificate_path: str | None = None
    certificate_password: str | None = field(default=None, repr=False)
    managed_identity_client_id: str | None = None


@dataclass(frozen=True, slots=True)
class CheckpointLocation:
    """Blob container (or local directory) holding the checkpoint documents."""

    kind: StoreKind
    container: str
    account_url: str | None = None
    connection_string: str | None = field(default=None, repr=False)
    directory: str | None = None


@dataclass(frozen=True, slots=True)
class TenantEntry:
    """One customer tenant of a deployment that serves several (an entry of ``TENANTS``).

    Only ``name`` and ``tenant_id`` are required; every other field left out falls back
    to the deployment's own setting, except the local domains (the provider's domains are
    not the customer's) and, with an own destination, the workspace (the deployment's
    workspace does not hold this tenant's rows, so verifying there would resend them).
    """

    name: str
    tenant_id: str
    ingestion_endpoint: str | None = None
    dcr_immutable_id: str | None = None
    stream_name: str | None = None
    health_stream_name: str | None = None
    workspace_id: str | None = None
    local_domains: tuple[str, ...] | None = None
    graph_quota_requests: int | None = None
    graph_quota_headroom: int | None = None
    enabled: bool = True
    use_deployment_container: bool = False
    """The tenant a single-tenant deployment read before ``TENANTS`` was set keeps that feed's state
    (``CHECKPOINT_CONTAINER`` itself, or the checkpoint directory), so its feed continues where it stopped."""

    @property
    def own_destination(self) -> bool:
        """The tenant's rows go to its own DCR (its own workspace), not the deployment's shared table."""
        return self.dcr_immutable_id is not None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a run needs, validated."""

    credentials: Credentials
    graph_auth_mode: AuthMode
    azure_auth_mode: AuthMode
    local_domains: tuple[str, ...]
    authority_host: str
    graph_base_url: str
    graph_scope: str
    ingestion_endpoint: str
    dcr_immutable_id: str
    dcr_stream_name: str
    ingestion_scope: str
    checkpoint: CheckpointLocation
    overlap_lookback: timedelta
    settle_delay: timedelta
    initial_lookback: timedelta
    max_slice_span: timedelta
    target_records_per_slice: int
    max_pages_per_slice: int
    run_time_budget: timedelta
    http_timeout_seconds: float
    http_max_retries: int
    http_retry_backoff_seconds: float
    ledger_warn_entries: int
    checkpoint_journal_min_bytes: int
    """Journal bytes below which the Blob checkpoint is never compacted (CHECKPOINT_JOURNAL_MIN_KIB)."""
    lock_lease_seconds: int
    workspace_id: str | None
    logs_query_endpoint: str
    logs_query_scope: str
    verify_delay: timedelta
    ca_bundle: str | None
    subjects: SubjectPolicy = KEEP_SUBJECTS
    discover_domains: bool = True
    """Read the tenant's verified domains from Graph besides LOCAL_DOMAINS (:mod:`connector.tenant_domains`)."""
    health_rows: bool = True
    """Send one ``MessageTraceHealth_CL`` row per run (``HEALTH_ROWS``)."""
    health_stream_name: str = "Custom-MessageTraceHealth"
    """The DCR stream of the health rows (``HEALTH_STREAM_NAME``)."""
    short_lookback: timedelta = DEFAULT_SHORT_LOOKBACK
    """What every live run re-reads before its high-water mark (``SHORT_LOOKBACK_MINUTES``)."""
    full_reread: timedelta = timedelta(minutes=60)
    """How much feed progress one deep re-read of the overlap spans (``FULL_REREAD_MINUTES``)."""
    graph_quota: QuotaPolicy = QuotaPolicy()
    """The tenant's shared Graph message trace budget (``GRAPH_QUOTA_*``, :mod:`connector.quota`)."""
    backfill_queue: str = "backfill-slices"
    """The Storage queue of backfills run on Azure (``BACKFILL_QUEUE``), beside the checkpoints."""
    tenants: tuple[TenantEntry, ...] = ()
    """The customer tenants this deployment serves (``TENANTS``); empty: the one tenant ``TENANT_ID``."""
    tenant_queue: str = "tenant-runs"
    """The Storage queue of the timer's per-tenant runs (``TENANT_QUEUE``), when ``TENANTS`` is set."""
    tenant: TenantEntry | None = None
    """The tenant these settings run, once :meth:`for_tenant` scoped them; None for a single-tenant deployment."""

    @property
    def graph_tenant_id(self) -> str:
        """The tenant whose message trace is read: the scoped tenant's, else ``TENANT_ID``."""
        return self.credentials.tenant_id if self.tenant is None else self.tenant.tenant_id

    @property
    def source_tenant_id(self) -> str:
        """The ``SourceTenantId`` of every row: the GUID of the tenant read ("" when TENANT_ID is a domain)."""
        return self.graph_tenant_id.lower() if _GUID.fullmatch(self.graph_tenant_id) else ""

    @property
    def multi_tenant(self) -> bool:
        """True when the deployment serves the tenants of ``TENANTS`` (each run scoped to one of them)."""
        return bool(self.tenants)

    def tenant_names(self) -> tuple[str, ...]:
        """The names of ``TENANTS``, in their order."""
        return tuple(entry.name for entry in self.tenants)

    def for_tenant(self, name: str) -> Settings:
        """These settings scoped to the tenant ``name`` of ``TENANTS``.

        The tenant gets its own checkpoint container (``<CHECKPOINT_CONTAINER>-<name>``;
        file store: ``<CHECKPOINT_DIRECTORY>/tenants/<name>``), so its checkpoints, locks,
        dead letters and Graph quota budget never mix with another's; Graph is read in its
        tenant; its rows go to its destination. Storage, ingestion and query keep the
        deployment's own identity.

        Raises:
            KeyError: no tenant of that name (the message names the ones there are).
        """
        entry = next((tenant for tenant in self.tenants if tenant.name == name), None)
        if entry is None:
            known = ", ".join(self.tenant_names()) or "none: TENANTS is not set"
            raise KeyError(f"no tenant named {name!r} in TENANTS (there are: {known})")
        location = self.checkpoint
        if entry.use_deployment_container:
            pass  # the single-tenant feed's own state, continued
        elif location.kind is StoreKind.BLOB:
            location = replace(location, container=tenant_container(location.container, name))
        else:
            location = replace(
                location, directory=os.path.join(location.directory or ".state", "tenants", name)
            )
        quota = self.graph_quota
        quota = replace(
            quota,
            limit=quota.limit if entry.graph_quota_requests is None else entry.graph_quota_requests,
            headroom=quota.headroom if entry.graph_quota_headroom is None else entry.graph_quota_headroom,
        )
        return replace(
            self,
            tenant=entry,
            checkpoint=location,
            ingestion_endpoint=entry.ingestion_endpoint or self.ingestion_endpoint,
            dcr_immutable_id=entry.dcr_immutable_id or self.dcr_immutable_id,
            dcr_stream_name=entry.stream_name or self.dcr_stream_name,
            health_stream_name=entry.health_stream_name or self.health_stream_name,
            workspace_id=entry.workspace_id
            if entry.own_destination
            else entry.workspace_id or self.workspace_id,
            local_domains=entry.local_domains or (),
            graph_quota=quota,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting from ``env`` (default ``os.environ``).

        Raises:
            ConfigError: naming each missing or bad setting.
        """
        reader = _Reader(os.environ if env is None else env)
        settings = cls._read(reader)
        reader.raise_if_problems()
        return settings

    @classmethod
    def for_storage(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read only what the checkpoint store and its lock need (``status``, ``unlock``, purges).

        Those commands never call Graph or Logs Ingestion, so a setting only a run uses
        (``LOCAL_DOMAINS``, ``INGESTION_ENDPOINT``, ``DCR_IMMUTABLE_ID``, the Graph
        credential) must not stop them: an operator unlocking a feed should not have to
        copy the whole deployment's configuration. Every setting is still parsed, but
        only the problems of :func:`storage_setting_names` are raised; the other fields
        of the returned object are not to be used (they may be empty).

        Raises:
            ConfigError: naming each missing or bad setting the store needs.
        """
        reader = _Reader(os.environ if env is None else env)
        settings = cls._read(reader)
        reader.raise_if_problems(only=storage_setting_names(settings))
        return settings

    @classmethod
    def _read(cls, reader: _Reader) -> Settings:
        """Parse every setting; problems are collected in ``reader`` (missing ones left empty)."""
        tenant_id = reader.required("TENANT_ID", _guid_or_domain)
        graph_mode = reader.optional("GRAPH_AUTH_MODE", AuthMode.MANAGED_IDENTITY, _enum(AuthMode))
        azure_mode = reader.optional("AZURE_AUTH_MODE", AuthMode.MANAGED_IDENTITY, _enum(AuthMode))
        if graph_mode is AuthMode.DEVELOPER:
            reader.problem("GRAPH_AUTH_MODE", DEVELOPER_GRAPH_REFUSAL)
        if azure_mode is AuthMode.FEDERATED_IDENTITY:
            reader.problem("AZURE_AUTH_MODE", FEDERATED_AZURE_REFUSAL)
        modes = {graph_mode, azure_mode}
        needs_app = bool(
            modes & {AuthMode.CLIENT_SECRET, AuthMode.CLIENT_CERTIFICATE, AuthMode.FEDERATED_IDENTITY}
        )
        client_id = (
            reader.required("CLIENT_ID", _non_empty)
            if needs_app
            else reader.optional("CLIENT_ID", None, _non_empty)
        )
        client_secret = (
            reader.required("CLIENT_SECRET", _non_empty) if AuthMode.CLIENT_SECRET in modes else None
        )
        cert_path = (
            reader.required("CLIENT_CERTIFICATE_PATH", _readable_file)
            if AuthMode.CLIENT_CERTIFICATE in modes
            else None
        )
        credentials = Credentials(
            tenant_id=tenant_id or "",
            client_id=client_id,
            client_secret=client_secret,
            certificate_path=cert_path,
            certificate_password=reader.optional("CLIENT_CERTIFICATE_PASSWORD", None, _non_empty),
            managed_identity_client_id=reader.optional("MANAGED_IDENTITY_CLIENT_ID", None, _non_empty),
        )

        store_kind = reader.optional("CHECKPOINT_STORE", StoreKind.BLOB, _enum(StoreKind))
        container = reader.optional("CHECKPOINT_CONTAINER", "message-trace-connector", _container_name)
        if store_kind is StoreKind.BLOB:
            connection_string = reader.optional("STORAGE_CONNECTION_STRING", None, _non_empty)
            account_url = reader.optional("STORAGE_ACCOUNT_URL", None, _http_url)
            if connection_string is None and account_url is None:
                reader.problem(
                    "STORAGE_ACCOUNT_URL",
                    "is required for CHECKPOINT_STORE=blob (or set STORAGE_CONNECTION_STRING)",
                )
            checkpoint = CheckpointLocation(
                kind=store_kind,
                container=container or "",
                account_url=account_url,
                connection_string=connection_string,
            )
        else:
            checkpoint = CheckpointLocation(
                kind=store_kind,
                container=container or "",
                directory=reader.optional("CHECKPOINT_DIRECTORY", ".state", _non_empty),
            )

        # Domain discovery makes LOCAL_DOMAINS optional; without it the setting is the only source.
        discover_domains = reader.optional("DISCOVER_DOMAINS", True, _switch)
        local_domains = (
            reader.optional("LOCAL_DOMAINS", None, _domain_list)
            if discover_domains
            else reader.required("LOCAL_DOMAINS", _domain_list)
        )
        overlap = reader.optional("OVERLAP_LOOKBACK_MINUTES", timedelta(minutes=60), _minutes(0, 7 * 24 * 60))
        settings = cls(
            credentials=credentials,
            graph_auth_mode=graph_mode,
            azure_auth_mode=azure_mode,
            local_domains=local_domains or (),
            authority_host=reader.optional("AUTHORITY_HOST", "https://login.microsoftonline.com", _https_url),
            graph_base_url=reader.optional("GRAPH_BASE_URL", "https://graph.microsoft.com", _https_url),
            graph_scope=reader.optional("GRAPH_SCOPE", "https://graph.microsoft.com/.default", _scope),
            ingestion_endpoint=reader.required("INGESTION_ENDPOINT", _https_url) or "",
            dcr_immutable_id=reader.required("DCR_IMMUTABLE_ID", _dcr_id) or "",
            dcr_stream_name=reader.optional("DCR_STREAM_NAME", "Custom-EmailEvents", _stream_name),
            ingestion_scope=reader.optional("INGESTION_SCOPE", "https://monitor.azure.com/.default", _scope),
            checkpoint=checkpoint,
            overlap_lookback=overlap,
            settle_delay=reader.optional("SETTLE_DELAY_MINUTES", timedelta(minutes=2), _minutes(0, 120)),
            initial_lookback=reader.optional(
                "INITIAL_LOOKBACK_HOURS",
                timedelta(hours=24),
                _hours(0.01, GRAPH_RETENTION / timedelta(hours=1)),
            ),
            max_slice_span=reader.optional("MAX_SLICE_HOURS", timedelta(hours=24), _hours(0.1, 240)),
            target_records_per_slice=reader.optional(
                "TARGET_RECORDS_PER_SLICE", 50_000, _int(1_000, 10_000_000)
            ),
            max_pages_per_slice=reader.optional("MAX_PAGES_PER_SLICE", 20, _int(2, 1_000)),
            run_time_budget=reader.optional(
                "RUN_TIME_BUDGET_SECONDS", timedelta(seconds=420), _seconds(5, 24 * 3600)
            ),
            http_timeout_seconds=reader.optional("HTTP_TIMEOUT_SECONDS", 60.0, _float(1, 600)),
            http_max_retries=reader.optional("HTTP_MAX_RETRIES", 6, _int(0, 20)),
            http_retry_backoff_seconds=reader.optional("HTTP_RETRY_BACKOFF_SECONDS", 2.0, _float(0, 60)),
            ledger_warn_entries=reader.optional("LEDGER_WARN_ENTRIES", 500_000, _int(1, 100_000_000)),
            checkpoint_journal_min_bytes=1024
            * reader.optional("CHECKPOINT_JOURNAL_MIN_KIB", 1024, _int(1, 1024 * 1024)),
            lock_lease_seconds=reader.optional("LOCK_LEASE_SECONDS", 60, _int(15, 60)),
            workspace_id=reader.optional("WORKSPACE_ID", None, _guid),
            logs_query_endpoint=reader.optional(
                "LOGS_QUERY_ENDPOINT", "https://api.loganalytics.io", _https_url
            ),
            logs_query_scope=reader.optional(
                "LOGS_QUERY_SCOPE", "https://api.loganalytics.io/.default", _scope
            ),
            verify_delay=reader.optional(
                "VERIFY_INGESTION_DELAY_MINUTES", timedelta(minutes=10), _minutes(0, 120)
            ),
            ca_bundle=_ca_bundle(reader),
            subjects=_subject_policy(reader),
            discover_domains=discover_domains,
            health_rows=reader.optional("HEALTH_ROWS", True, _switch),
            health_stream_name=reader.optional(
                "HEALTH_STREAM_NAME", "Custom-MessageTraceHealth", _stream_name
            ),
            # Unset, it is 10 minutes or the whole overlap if that is shorter (no tiers).
            short_lookback=reader.optional(
                "SHORT_LOOKBACK_MINUTES", min(DEFAULT_SHORT_LOOKBACK, overlap), _minutes(0, 7 * 24 * 60)
            ),
            full_reread=reader.optional("FULL_REREAD_MINUTES", timedelta(minutes=60), _minutes(5, 24 * 60)),
            graph_quota=_graph_quota(reader),
            backfill_queue=reader.optional("BACKFILL_QUEUE", "backfill-slices", _queue_name),
            tenants=reader.optional("TENANTS", (), _tenant_list),
            tenant_queue=reader.optional("TENANT_QUEUE", "tenant-runs", _queue_name),
        )
        _refuse_contradictions(reader, settings)
        _refuse_bad_tenancy(reader, settings)
        _refuse_national_clouds(reader, settings)
        return settings


_STORE_SETTINGS = frozenset(
    {
        "CHECKPOINT_STORE",
        "CHECKPOINT_CONTAINER",
        "CHECKPOINT_DIRECTORY",
        "STORAGE_CONNECTION_STRING",
        "STORAGE_ACCOUNT_URL",
        "LOCK_LEASE_SECONDS",
        "REQUESTS_CA_BUNDLE",
        "SSL_CERT_FILE",
        "HTTP_TIMEOUT_SECONDS",
        "BACKFILL_QUEUE",
        "TENANTS",
        "TENANT_QUEUE",
    }
)
_CREDENTIAL_SETTINGS = {
    AuthMode.MANAGED_IDENTITY: frozenset({"MANAGED_IDENTITY_CLIENT_ID"}),
    AuthMode.DEVELOPER: frozenset({"TENANT_ID"}),
    AuthMode.CLIENT_SECRET: frozenset({"TENANT_ID", "CLIENT_ID", "CLIENT_SECRET"}),
    AuthMode.CLIENT_CERTIFICATE: frozenset(
        {"TENANT_ID", "CLIENT_ID", "CLIENT_CERTIFICATE_PATH", "CLIENT_CERTIFICATE_PASSWORD"}
    ),
}
_AUTHORITY_SETTINGS = frozenset(
    {"AZURE_AUTH_MODE", "AUTHORITY_HOST", "HTTP_MAX_RETRIES", "HTTP_RETRY_BACKOFF_SECONDS"}
)


def storage_setting_names(settings: Settings) -> frozenset[str]:
    """The settings the checkpoint store needs, given the store and auth mode ``settings`` chose.

    A connection string or the file store needs no credential. A storage account URL
    uses ``AZURE_AUTH_MODE``'s credential: a managed identity needs no tenant, an app
    credential (secret or certificate) signs in to ``TENANT_ID`` (a mode not listed
    here needs every credential setting, to be safe).
    """
    location = settings.checkpoint
    if location.kind is StoreKind.FILE or location.connection_string is not None:
        return _STORE_SETTINGS
    credential = _CREDENTIAL_SETTINGS.get(
        settings.azure_auth_mode, frozenset().union(*_CREDENTIAL_SETTINGS.values())
    )
    return _STORE_SETTINGS | _AUTHORITY_SETTINGS | credential


def _subject_policy(reader: _Reader) -> SubjectPolicy:
    """``SUBJECT_MODE`` and, for ``hash``, ``SUBJECT_HASH_KEY`` (never quoted in a problem or a log).

    A key set while the mode is not ``hash`` is not an error (a deployer may stage the key
    before switching), only a warning: subjects are then kept or dropped, not hashed.
    """
    mode = reader.optional("SUBJECT_MODE", SubjectMode.KEEP, _enum(SubjectMode))
    if mode is not SubjectMode.HASH:
        if reader.get("SUBJECT_HASH_KEY") is not None:
            logger.warning("SUBJECT_HASH_KEY is set but SUBJECT_MODE is %s: the key is not used", mode.value)
        return SubjectPolicy(mode)
    if reader.get("SUBJECT_HASH_KEY") is None:
        reader.problem("SUBJECT_HASH_KEY", f"is required when SUBJECT_MODE is hash: {KEY_FORMAT}")
        return KEEP_SUBJECTS
    key = reader.optional("SUBJECT_HASH_KEY", None, parse_hash_key)
    if key is None:
        return KEEP_SUBJECTS  # the problem is recorded: the run never starts with this
    return SubjectPolicy(mode, key)


def _graph_quota(reader: _Reader) -> QuotaPolicy:
    """``GRAPH_QUOTA_*``: the tenant's message trace quota as the connector paces itself to it.

    Graph allows 100 requests per 300 s per tenant; lower values leave more to others.
    Headroom at or above the limit would leave the connector nothing, so it is refused.
    """
    limit = reader.optional("GRAPH_QUOTA_REQUESTS", 100, _int(1, 10_000))
    window = reader.optional("GRAPH_QUOTA_WINDOW_SECONDS", 300.0, _float(1, 3600))
    headroom = reader.optional("GRAPH_QUOTA_HEADROOM", 0, _int(0, 10_000))
    reserve = reader.optional("GRAPH_QUOTA_LIVE_RESERVE_PERCENT", 20.0, _float(0, 90))
    if headroom >= limit:
        reader.problem(
            "GRAPH_QUOTA_HEADROOM",
            f"({headroom}) must be below GRAPH_QUOTA_REQUESTS ({limit}): it is the requests per window left "
            "for admins' own searches, so lower it or raise the limit",
        )
        headroom = 0
    return QuotaPolicy(limit=limit, window_seconds=window, headroom=headroom, live_reserve_percent=reserve)


def _refuse_contradictions(reader: _Reader, settings: Settings) -> None:
    """Settings that are each valid but together would break a promise of the feed."""
    if settings.initial_lookback < settings.overlap_lookback:
        # The first run starts INITIAL_LOOKBACK_HOURS back and records that as the feed's coverage start;
        # later runs re-read OVERLAP_LOOKBACK_MINUTES, which then reaches into what backfills cover.
        reader.problem(
            "INITIAL_LOOKBACK_HOURS",
            f"({settings.initial_lookback / timedelta(hours=1):g} h) must be at least OVERLAP_LOOKBACK_MINUTES "
            f"({settings.overlap_lookback / timedelta(minutes=1):g} min): raise it, or lower the overlap",
        )
    if settings.short_lookback > settings.overlap_lookback:
        # Every run re-reads the short lookback; a deep re-read of a shorter overlap would be pointless.
        reader.problem(
            "SHORT_LOOKBACK_MINUTES",
            f"({settings.short_lookback / timedelta(minutes=1):g} min) must be at most OVERLAP_LOOKBACK_MINUTES "
            f"({settings.overlap_lookback / timedelta(minutes=1):g} min): lower it, or raise the overlap "
            "(equal turns the tiers off: every run re-reads the whole overlap)",
        )
    if settings.health_rows and settings.health_stream_name == settings.dcr_stream_name:
        # Health rows in the mail stream would be refused (other columns) or, worse, counted as mail.
        reader.problem(
            "HEALTH_STREAM_NAME",
            f"must differ from DCR_STREAM_NAME ({settings.dcr_stream_name}): the health rows have their own "
            "stream (Custom-MessageTraceHealth), or set HEALTH_ROWS=off",
        )


def _refuse_bad_tenancy(reader: _Reader, settings: Settings) -> None:
    """``TENANTS`` entries that are each valid but cannot run with the deployment's other settings."""
    if not settings.tenants:
        return
    if settings.graph_auth_mode is AuthMode.MANAGED_IDENTITY:
        reader.problem(
            "GRAPH_AUTH_MODE",
            "managed_identity reads the message trace of its own tenant only; with TENANTS use a multi-tenant app "
            "registration (CLIENT_ID) consented in each tenant: federated_identity (the managed identity as its "
            "federated credential, no secret) or client_certificate",
        )
    if settings.tenant_queue == settings.backfill_queue:
        reader.problem("TENANT_QUEUE", f"must differ from BACKFILL_QUEUE ({settings.backfill_queue})")
    quota = settings.graph_quota
    for entry in settings.tenants:
        where = f"tenant {entry.name}"
        if not settings.discover_domains and not entry.local_domains:
            reader.problem(
                "TENANTS",
                f"{where}: needs localDomains, since DISCOVER_DOMAINS is off (or turn discovery on)",
            )
        limit = quota.limit if entry.graph_quota_requests is None else entry.graph_quota_requests
        headroom = quota.headroom if entry.graph_quota_headroom is None else entry.graph_quota_headroom
        if headroom >= limit:
            reader.problem(
                "TENANTS",
                f"{where}: graphQuotaHeadroom ({headroom}) must be below its graphQuotaRequests ({limit})",
            )
        location = settings.checkpoint
        if (
            location.kind is StoreKind.BLOB
            and not entry.use_deployment_container
            and len(tenant_container(location.container, entry.name)) > 63
        ):
            reader.problem(
                "TENANTS",
                f"{where}: its checkpoint container {tenant_container(location.container, entry.name)!r} is longer "
                "than 63 characters: shorten the name or CHECKPOINT_CONTAINER",
            )


def tenant_container(container: str, name: str) -> str:
    """The checkpoint container of the tenant ``name`` of ``TENANTS``: ``<CHECKPOINT_CONTAINER>-<name>``."""
    return f"{container}-{name}"


_TENANT_KEYS = {
    "name": "name",
    "tenantId": "tenant_id",
    "ingestionEndpoint": "ingestion_endpoint",
    "dcrImmutableId": "dcr_immutable_id",
    "streamName": "stream_name",
    "healthStreamName": "health_stream_name",
    "workspaceId": "workspace_id",
    "localDomains": "local_domains",
    "graphQuotaRequests": "graph_quota_requests",
    "graphQuotaHeadroom": "graph_quota_headroom",
    "enabled": "enabled",
    "useDeploymentContainer": "use_deployment_container",
}
TENANT_NAME = re.compile(r"[a-z0-9](?:(?!.*--)[a-z0-9-]{0,22}[a-z0-9])?")


def _tenant_list(raw: str) -> tuple[TenantEntry, ...]:
    """``TENANTS``: a JSON array of tenant entries (see :class:`TenantEntry`), each checked.

    Raises:
        ValueError: naming every bad entry and field, by position and name.
    """
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"must be a JSON array of tenants: {err.msg} at character {err.pos}") from None
    if not isinstance(document, list):
        raise ValueError('must be a JSON array of tenants like [{"name": "contoso", "tenantId": "<GUID>"}]')
    entries: list[TenantEntry] = []
    problems: list[str] = []
    for index, item in enumerate(document, start=1):
        try:
            entries.append(_tenant_entry(item))
        except ValueError as err:
            label = item.get("name") if isinstance(item, dict) and isinstance(item.get("name"), str) else None
            problems.append(f"entry {index}{f' ({label})' if label else ''}: {err}")
    continuing = [entry.name for entry in entries if entry.use_deployment_container]
    if len(continuing) > 1:
        problems.append(
            f"useDeploymentContainer is set for {', '.join(continuing)}: only the one tenant the deployment "
            "read before TENANTS can continue its feed"
        )
    for field_name in ("name", "tenant_id"):
        seen: set[str] = set()
        for entry in entries:
            value = getattr(entry, field_name).lower()
            if value in seen:
                problems.append(f"{'name' if field_name == 'name' else 'tenantId'} {value} appears twice")
            seen.add(value)
    if problems:
        raise ValueError("; ".join(problems))
    return tuple(entries)


def _tenant_entry(item: object) -> TenantEntry:
    """One entry of ``TENANTS``; every problem of it in one ValueError."""
    if not isinstance(item, dict):
        raise ValueError("must be an object with name and tenantId")
    problems: list[str] = []
    unknown = sorted(set(item) - set(_TENANT_KEYS))
    if unknown:
        problems.append(f"unknown keys {', '.join(unknown)} (known: {', '.join(_TENANT_KEYS)})")
    fields: dict[str, object] = {}

    def take(key: str, parse: Callable[[str], object], *, required: bool = False) -> None:
        value = item.get(key)
        if value is None:
            if required:
                problems.append(f"{key} is required")
            return
        try:
            if key == "localDomains":
                if not isinstance(value, list) or not all(isinstance(part, str) for part in value):
                    raise ValueError("must be an array of domains")
                fields[_TENANT_KEYS[key]] = parse(",".join(value))
            elif key in ("enabled", "useDeploymentContainer"):
                if not isinstance(value, bool):
                    raise ValueError(f"must be true or false, got {value!r}")
                fields[_TENANT_KEYS[key]] = value
            elif key.startswith("graphQuota"):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"must be a whole number, got {value!r}")
                fields[_TENANT_KEYS[key]] = parse(str(value))
            else:
                if not isinstance(value, str):
                    raise ValueError(f"must be a string, got {value!r}")
                fields[_TENANT_KEYS[key]] = parse(value.strip())
        except ValueError as err:
            problems.append(f"{key} {err}")

    take("name", _tenant_name, required=True)
    take("tenantId", _tenant_guid, required=True)
    take("ingestionEndpoint", _https_url)
    take("dcrImmutableId", _dcr_id)
    take("streamName", _stream_name)
    take("healthStreamName", _stream_name)
    take("workspaceId", _guid)
    take("localDomains", _domain_list)
    take("graphQuotaRequests", _int(1, 10_000))
    take("graphQuotaHeadroom", _int(0, 10_000))
    take("enabled", _non_empty)
    take("useDeploymentContainer", _non_empty)
    if (item.get("ingestionEndpoint") is None) != (item.get("dcrImmutableId") is None):
        problems.append(
            "ingestionEndpoint and dcrImmutableId go together (the tenant's own DCR), or neither (the shared table)"
        )
    if problems:
        raise ValueError("; ".join(problems))
    return TenantEntry(**fields)  # type: ignore[arg-type]


def _tenant_name(raw: str) -> str:
    if not TENANT_NAME.fullmatch(raw):
        raise ValueError(
            f"must be 1-24 lower-case letters, digits and single '-' (it names the tenant's container), got {raw!r}"
        )
    return raw


def _tenant_guid(raw: str) -> str:
    if not _GUID.fullmatch(raw):
        raise ValueError(f"must be the tenant's GUID (its directory id), got {raw!r}")
    return raw.lower()


FEDERATED_AZURE_REFUSAL = (
    "federated_identity is for Graph only (the app registration signing in to each customer tenant); storage, "
    "ingestion and query use the deployment's own identity: managed_identity in Azure"
)

DEVELOPER_GRAPH_REFUSAL = (
    "developer is for storage, ingestion and query only: Graph message trace needs the application "
    "permission ExchangeMessageTrace.Read.All, which a user's `az login` token never carries; from a laptop "
    "use client_secret or client_certificate with the app registration"
)

# Sign-in and Graph hosts of the national clouds (US Government L4/L5 (DoD), China operated by 21Vianet).
NATIONAL_CLOUD_HOSTS = frozenset(
    {
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
        "graph.microsoft.us",
        "dod-graph.microsoft.us",
        "microsoftgraph.chinacloudapi.cn",
    }
)


def national_cloud(url: str) -> str | None:
    """The national-cloud host ``url`` names, or None for the global service (or a simulator)."""
    host = (urlsplit(url).hostname or "").lower().rstrip(".")
    return host if host in NATIONAL_CLOUD_HOSTS else None


def _refuse_national_clouds(reader: _Reader, settings: Settings) -> None:
    """Graph message trace is served by the global service only: refuse a national cloud at start.

    Without this a US Government or China deployment would get tokens and then fail on
    every run with a 404 or 401 from a Graph that has no messageTraces API.
    """
    for name, url in (
        ("AUTHORITY_HOST", settings.authority_host),
        ("GRAPH_BASE_URL", settings.graph_base_url),
    ):
        host = national_cloud(url)
        if host is not None:
            reader.problem(
                name,
                f"{host} is a national cloud, and Microsoft Graph message trace is served by the global service "
                "only (graph.microsoft.com with login.microsoftonline.com); this connector cannot run there",
            )


def local_domains(env: Mapping[str, str] | None = None) -> tuple[str, ...] | None:
    """``LOCAL_DOMAINS`` alone (canonical, duplicates dropped), or None when it is not set.

    For ``lookalikes``, which works offline on the organisation's domains and must not ask
    for a tenant, a store or a DCR.

    Raises:
        ConfigError: the value is set but is not a list of domains.
    """
    reader = _Reader(os.environ if env is None else env)
    domains = reader.optional("LOCAL_DOMAINS", None, _domain_list)
    reader.raise_if_problems()
    return domains


def timer_schedule(env: Mapping[str, str] | None = None) -> str:
    """Return the NCRONTAB schedule for the timer trigger (``TIMER_SCHEDULE``, default every 5 min).

    This one setting is read when the function app is indexed, because the
    Functions host needs the schedule to register the trigger.

    Raises:
        ConfigError: the value is not a six-field NCRONTAB expression.
    """
    source = os.environ if env is None else env
    value = source.get("TIMER_SCHEDULE", "").strip() or DEFAULT_TIMER_SCHEDULE
    fields = value.split()
    if len(fields) != 6 or not all(re.fullmatch(r"[0-9*/,\-A-Za-z]+", part) for part in fields):
        raise ConfigError(
            [
                (
                    "TIMER_SCHEDULE",
                    f"must be a six-field NCRONTAB expression like '0 */5 * * * *', got {value!r}",
                )
            ]
        )
    return value


# ----------------------------------------------------------------------------- parsing helpers


class _Reader:
    """Collects problems so one ConfigError can name them all."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self._problems: list[tuple[str, str]] = []

    def get(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None or not value.strip():
            return None
        return value.strip()

    def problem(self, name: str, text: str) -> None:
        self._problems.append((name, text))

    def required(self, name: str, parse: Callable[[str], _T]) -> _T | None:
        raw = self.get(name)
        if raw is None:
            self.problem(name, "is required but not set")
            return None
        return self._parse(name, raw, parse)

    def optional(self, name: str, default: _T, parse: Callable[[str], _T]) -> _T:
        raw = self.get(name)
        if raw is None:
            return default
        parsed = self._parse(name, raw, parse)
        return default if parsed is None else parsed

    def _parse(self, name: str, raw: str, parse: Callable[[str], _T]) -> _T | None:
        try:
            return parse(raw)
        except ValueError as err:
            self.problem(name, str(err))
            return None

    def raise_if_problems(self, only: frozenset[str] | None = None) -> None:
        problems = [p for p in self._problems if only is None or p[0] in only]
        if problems:
            raise ConfigError(problems)


def _non_empty(raw: str) -> str:
    return raw


_GUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")


def _guid(raw: str) -> str:
    if not _GUID.fullmatch(raw):
        raise ValueError(f"must be a GUID (the workspace id, not its name), got {raw!r}")
    return raw


def _guid_or_domain(raw: str) -> str:
    if re.fullmatch(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}", raw) or re.fullmatch(
        r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", raw
    ):
        return raw
    raise ValueError(f"must be a tenant GUID or a verified domain, got {raw!r}")


def _enum(kind: type[_E]) -> Callable[[str], _E]:
    def parse(raw: str) -> _E:
        for member in kind:
            if member.value == raw.lower():
                return member
        allowed = ", ".join(str(m.value) for m in kind)
        raise ValueError(f"must be one of {allowed}, got {raw!r}")

    return parse


def _https_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme != "https" or not parts.netloc:
        raise ValueError(f"must be an https:// URL, got {raw!r}")
    return raw.rstrip("/")


def _http_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ValueError(f"must be an http(s):// URL, got {raw!r}")
    return raw.rstrip("/")


def _scope(raw: str) -> str:
    if not raw.endswith("/.default"):
        raise ValueError(f"must be a resource scope ending in /.default, got {raw!r}")
    return raw


def _dcr_id(raw: str) -> str:
    if not re.fullmatch(r"dcr-[0-9a-fA-F]{32}", raw):
        raise ValueError(f"must be a DCR immutable id like dcr-0123...(32 hex digits), got {raw!r}")
    return raw


def _stream_name(raw: str) -> str:
    if not re.fullmatch(r"Custom-[A-Za-z0-9_]+", raw):
        raise ValueError(f"must be a custom stream name like Custom-EmailEvents, got {raw!r}")
    return raw


def _container_name(raw: str) -> str:
    if not re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]", raw):
        raise ValueError(f"must be a blob container name (3-63 lower-case letters, digits, '-'), got {raw!r}")
    return raw


def _queue_name(raw: str) -> str:
    """A Storage queue name short enough that the host's ``<name>-poison`` is one too."""
    if not re.fullmatch(r"[a-z0-9](?!.*--)[a-z0-9-]{1,54}[a-z0-9]", raw):
        raise ValueError(
            f"must be a Storage queue name (3-56 lower-case letters, digits, '-', so that '<name>-poison' "
            f"fits 63), got {raw!r}"
        )
    return raw


def _domain_list(raw: str) -> tuple[str, ...]:
    """Each domain in its canonical form (:func:`connector.domains.local_domain`), duplicates dropped.

    Normalised once here so Unicode, upper-case or trailing-dot spellings of a domain
    match the rows' domains, which are normalised the same way.
    """
    entries = [part for part in raw.split(",") if part.strip()]
    domains: list[str] = []
    bad: list[str] = []
    for entry in entries:
        try:
            domains.append(local_domain(entry))
        except ValueError as err:
            bad.append(str(err))
    if not entries or bad:
        why = ", ".join(bad) or f"got {raw!r}"
        raise ValueError(f"must be a comma-separated list of mail domains like contoso.com: {why}")
    return tuple(dict.fromkeys(domains))


def _switch(raw: str) -> bool:
    """``on``/``off`` (also ``true``/``false``, ``1``/``0``, ``yes``/``no``), any case, spaces ignored."""
    value = raw.strip().lower()
    if value in ("on", "true", "1", "yes"):
        return True
    if value in ("off", "false", "0", "no"):
        return False
    raise ValueError(f"must be on or off (or true/false), got {raw!r}")


def _readable_file(raw: str) -> str:
    if not os.path.isfile(raw):
        raise ValueError(f"file {raw!r} does not exist")
    return raw


def _number(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"must be a number, got {raw!r}") from None


def _float(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = _number(raw)
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}, got {raw!r}")
        return value

    return parse


def _int(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        if not re.fullmatch(r"[0-9_]+", raw):
            raise ValueError(f"must be a whole number, got {raw!r}")
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {raw!r}")
        return value

    return parse


def _duration(unit: timedelta, low: float, high: float) -> Callable[[str], timedelta]:
    bounded = _float(low, high)

    def parse(raw: str) -> timedelta:
        return unit * bounded(raw)

    return parse


def _minutes(low: float, high: float) -> Callable[[str], timedelta]:
    return _duration(timedelta(minutes=1), low, high)


def _hours(low: float, high: float) -> Callable[[str], timedelta]:
    return _duration(timedelta(hours=1), low, high)


def _seconds(low: float, high: float) -> Callable[[str], timedelta]:
    return _duration(timedelta(seconds=1), low, high)


def _ca_bundle(reader: _Reader) -> str | None:
    for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        raw = reader.get(name)
        if raw is not None:
            if not os.path.isfile(raw):
                reader.problem(name, f"CA bundle file {raw!r} does not exist")
                return None
            return raw
    return None


# ---- enrichment (``python -m connector enrich``: MessageTraceDetail_CL) ----------------------------


@dataclass(frozen=True, slots=True)
class EnrichmentSettings:
    """What ``enrich`` reads besides a run's settings: the detail stream and the request cap."""

    detail_stream_name: str = "Custom-MessageTraceDetail"
    """The DCR stream of the detail rows (``DETAIL_STREAM_NAME``)."""
    max_requests: int = 50
    """Graph requests one enrich run may spend at most (``DETAIL_MAX_REQUESTS``), from the quota budget."""


def read_enrichment_settings(env: Mapping[str, str] | None = None) -> EnrichmentSettings:
    """Read ``DETAIL_STREAM_NAME`` and ``DETAIL_MAX_REQUESTS``.

    Kept apart from :class:`Settings` (a run never needs them). The cap is at most the
    Graph quota (100 requests per 5 minutes): a larger one could only wait.

    Raises:
        ConfigError: naming each bad setting.
    """
    reader = _Reader(os.environ if env is None else env)
    settings = EnrichmentSettings(
        detail_stream_name=reader.optional("DETAIL_STREAM_NAME", "Custom-MessageTraceDetail", _stream_name),
        max_requests=reader.optional("DETAIL_MAX_REQUESTS", 50, _int(1, 100)),
    )
    reader.raise_if_problems()
    return settings
