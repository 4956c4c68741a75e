"""Local simulator of the Microsoft services the connector talks to.

Why: the connector's tests and demo must run the real msal, azure-identity,
azure-core, azure-monitor-ingestion/-query and requests code without touching
the network. :class:`Simulator` starts, on ``127.0.0.1`` with real TLS from a
throw-away CA and one shared data clock:

* ``entra``: Entra ID v2.0 discovery and client-credentials token endpoint
  (:mod:`.entra`), plus ``managed_identity``, the App Service identity
  endpoint (plain HTTP);
* ``graph``: Graph ``/v1.0/admin/exchange/tracing/messageTraces`` (:mod:`.graph`);
* ``ingestion``: the Logs Ingestion API for one DCR and stream (:mod:`.ingestion`);
* ``logs_query``: the Log Analytics query API over the ingested rows (:mod:`.logs_query`);

and hands out the environment the connector reads. Every server has the fault
injection, ``on_request`` hook and request log of :mod:`.http`.

Many tenants, one deployment: :meth:`Simulator.add_tenant` adds a customer tenant
(:class:`SimulatedTenant`) served by the same servers: Entra knows it and has the
default apps consented there, Graph keeps its own records, quota, domains, flags and
faults (chosen by the token's ``tid``), ingestion gets its own DCR and the query API its
own workspace. Those (like the default ones) belong to the deployment's Azure tenant: they
take the home tenant's tokens only, the deployment identity's. The simulator's own
attributes (``sim.graph.add``, ``sim.ingestion.rows``, ...) stay those of the default
tenant (:attr:`Simulator.default_tenant`).
:meth:`SimulatedTenant.tenant_entry` is its entry of the connector's ``TENANTS`` setting.

Federated identity credential: the managed identity endpoint issues a token for
``api://AzureADTokenExchange``, and the multi-tenant app (``client_id``, also
``federated_client_id``) has a federated credential trusting that identity, so
``client_assertion`` = that token signs the app in to any tenant it is consented in.
:mod:`.traffic` generates realistic rows; :mod:`.azurite` starts Azurite for blob state.
:mod:`.local` and ``python -m connector.simulator`` run it for a local trial.

Example::

    with Simulator() as sim:
        sim.graph.add(generate_traffic(start, end, messages=200, seed=1))
        env = sim.connector_env()
        ...  # run the connector with env
        assert sim.ingestion.rows()
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Literal

from connector.schema import TableSchema, load_detail_schema, load_health_schema, load_table_schema

from .entra import (
    GRAPH_RESOURCE,
    MONITOR_RESOURCE,
    TOKEN_EXCHANGE_AUDIENCE,
    Claims,
    EntraServer,
    ManagedIdentityServer,
)
from .graph import DEFAULT_LOCAL_DOMAINS, GraphServer, GraphTenant, MessageTraceStore, StatusCase
from .http import Request, Response, SimulatedHttpServer
from .ingestion import DataCollectionRule, IngestionServer
from .logs_query import LogsQueryServer
from .tls import ClientCertificate, TestCertificateAuthority
from .traffic import generate_traffic, plan_status_changes, realistic_visibility

# What tests, scripts and the demo import from the package; the rest is in the submodules.
__all__ = [
    "Claims",
    "ManualClock",
    "MessageTraceStore",
    "Request",
    "Response",
    "SimulatedHttpServer",
    "SimulatedTenant",
    "Simulator",
    "TestCertificateAuthority",
    "generate_traffic",
    "plan_status_changes",
    "realistic_visibility",
]

AuthMode = Literal["client_secret", "certificate", "managed_identity"]
LOCAL_DOMAINS: tuple[str, ...] = DEFAULT_LOCAL_DOMAINS
DEFAULT_TENANT_ID = "4f1c3a6e-8d2b-4c7a-9e5f-1b2d3c4e5f60"
DEFAULT_CLIENT_ID = "0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c6d"
DEFAULT_CERT_CLIENT_ID = "5e4d3c2b-1a09-4f8e-b7d6-c5b4a3928170"
DEFAULT_MI_CLIENT_ID = "9c8b7a69-5847-4362-a514-0f1e2d3c4b5a"
TOKEN_EXCHANGE_SCOPE = f"{TOKEN_EXCHANGE_AUDIENCE}/.default"
"""What ``ManagedIdentityCredential.get_token`` is asked for to get a federated client assertion."""
_TENANT_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,22}[a-z0-9])?")


def tenant_name_for(tenant_id: str) -> str:
    """The default ``TENANTS`` name of a tenant: ``t-`` and the first 8 hex digits of its id."""
    return "t-" + re.sub(r"[^0-9a-f]", "", tenant_id.lower())[:8]


class SimulatedTenant:
    """One customer tenant of a :class:`Simulator`: its Entra tenant, Graph data, DCR and workspace.

    Attributes:
        tenant_id: the tenant GUID (tokens issued for it carry it as ``tid``).
        name: its ``TENANTS`` name.
        graph: its side of Graph (:class:`~.graph.GraphTenant`: ``add``, ``rows``, ``quota``,
            ``inject``, ``requests``, ``permission_granted``, ``domains``, ...).
        ingestion: its DCR (:class:`~.ingestion.DataCollectionRule`: ``rows``, ``batches``,
            ``request_count``, ``inject``, ``requests``, ``role_assigned``, ...).
        dcr_immutable_id, workspace_id: its own destination and the workspace showing it.
        local_domains: its own mail domains (Graph ``/domains`` lists them; give them to
            ``generate_traffic(local_domains=...)``).
    """

    def __init__(
        self,
        sim: Simulator,
        tenant_id: str,
        name: str,
        graph: GraphTenant,
        ingestion: DataCollectionRule,
        workspace_id: str,
        local_domains: tuple[str, ...],
    ) -> None:
        self._sim = sim
        self.tenant_id = tenant_id
        self.name = name
        self.graph = graph
        self.ingestion = ingestion
        self.dcr_immutable_id = ingestion.dcr_immutable_id
        self.workspace_id = workspace_id
        self.local_domains = local_domains

    def __repr__(self) -> str:
        return f"SimulatedTenant(name={self.name!r}, tenant_id={self.tenant_id!r})"

    @property
    def authority(self) -> str:
        """msal authority URL of this tenant: ``{entra}/{tenant}``."""
        return f"{self._sim.entra.url}/{self.tenant_id}"

    def withdraw_consent(self, client_id: str | None = None) -> None:
        """Delete the app's service principal here (default: both default apps): AADSTS700016 from now on."""
        for app in (client_id,) if client_id else (self._sim.client_id, self._sim.cert_client_id):
            self._sim.entra.withdraw_consent(self.tenant_id, app)

    def grant_consent(self, client_id: str | None = None) -> None:
        """Consent (again) to the app here (default: both default apps)."""
        for app in (client_id,) if client_id else (self._sim.client_id, self._sim.cert_client_id):
            self._sim.entra.consent(self.tenant_id, app)

    def tenant_entry(self, own_destination: bool = True) -> dict[str, Any]:
        """This tenant's entry of the connector's ``TENANTS`` setting.

        Args:
            own_destination: with ``ingestionEndpoint``, ``dcrImmutableId`` and ``workspaceId``
                of its own DCR and workspace; ``False``: the deployment's table (shared).
        """
        entry: dict[str, Any] = {"name": self.name, "tenantId": self.tenant_id}
        if own_destination:
            entry.update(
                {
                    "ingestionEndpoint": self._sim.ingestion.url,
                    "dcrImmutableId": self.dcr_immutable_id,
                    "workspaceId": self.workspace_id,
                }
            )
        entry["localDomains"] = list(self.local_domains)
        return entry


class ManualClock:
    """A settable, advanceable clock for the simulator (aware UTC).

    Example::

        clock = ManualClock(datetime(2026, 1, 23, tzinfo=UTC))
        sim = Simulator(clock=clock)
        clock.advance(timedelta(minutes=10))
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = _aware(start or datetime.now(UTC))
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta | float) -> datetime:
        """Move forward by a timedelta or seconds; returns the new now."""
        step = delta if isinstance(delta, timedelta) else timedelta(seconds=delta)
        with self._lock:
            self._now += step
            return self._now

    def set(self, value: datetime) -> None:
        """Jump to ``value`` (aware)."""
        with self._lock:
            self._now = _aware(value)


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("simulator clocks must return timezone-aware datetimes")
    return value.astimezone(UTC)


def _real_clock() -> datetime:
    return datetime.now(UTC)


class Simulator:
    """Entra (HTTPS), managed identity (HTTP), Graph, ingestion and logs query (HTTPS).

    Args:
        clock: the data clock (aware UTC); default real time. Settable later
            through the ``clock`` attribute; every server reads it per request.
        tenant_id: the tenant GUID.
        token_lifetime: access token lifetime in seconds.
        status_case: Graph status casing (``"camel"``, ``"pascal"``, ``"mixed"``).
        graph_quota: ``(requests, seconds)`` of Graph's rolling quota.
        publication_delay: default delay before added Graph rows become visible.

    Attributes:
        ca, entra, managed_identity, graph, ingestion, logs_query: the parts.
        client_id, client_secret: the confidential app (secret credential); multi-tenant,
            consented in every tenant, and with a federated credential trusting the managed
            identity (so ``federated_client_id`` is the same app).
        cert_client_id, client_certificate: an app using a certificate (consented everywhere too).
        managed_identity_client_id: the system-assigned managed identity (home tenant).
        dcr_immutable_id, stream_name, schema: the ingestion target.
        workspace_id: the workspace the logs query API answers for.
        default_tenant: the home tenant as a :class:`SimulatedTenant`.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], datetime] | None = None,
        tenant_id: str = DEFAULT_TENANT_ID,
        token_lifetime: int = 3600,
        status_case: StatusCase = "mixed",
        graph_quota: tuple[int, float] = (100, 300.0),
        publication_delay: timedelta = timedelta(0),
    ) -> None:
        self.clock: Callable[[], datetime] = clock or _real_clock
        self.tenant_id = tenant_id
        self.client_id = DEFAULT_CLIENT_ID
        self.client_secret = "Sim8Q~" + secrets.token_urlsafe(30)
        self.cert_client_id = DEFAULT_CERT_CLIENT_ID
        self.managed_identity_client_id = DEFAULT_MI_CLIENT_ID
        self.schema: TableSchema = load_table_schema()
        self.health_schema: TableSchema = load_health_schema()
        self.detail_schema: TableSchema = load_detail_schema()
        self.stream_name = self.schema.stream
        self.dcr_immutable_id = "dcr-" + uuid.uuid4().hex
        self.ca = TestCertificateAuthority()
        self._started = False
        self._closed = False
        try:
            context = self.ca.server_ssl_context()
            self.client_certificate: ClientCertificate = self.ca.create_client_certificate(
                "message-trace-connector"
            )
            self.entra = EntraServer(context, tenant_id, token_lifetime=token_lifetime)
            self._register_default_identities()
            self.managed_identity = ManagedIdentityServer(self.entra)
            self.graph = GraphServer(
                context,
                self.entra.validate_bearer,
                tenant_id,
                self.now,
                status_case=status_case,
                quota_limit=graph_quota[0],
                quota_window_seconds=graph_quota[1],
                publication_delay=publication_delay,
            )
            self.ingestion = IngestionServer(
                context,
                self.entra.validate_bearer,
                self.dcr_immutable_id,
                self.schema,
                (self.health_schema, self.detail_schema),
                tenant_id=tenant_id,
            )
            self.workspace_id = str(uuid.uuid4())
            self.logs_query = LogsQueryServer(
                context,
                self.entra.validate_bearer,
                self.ingestion,
                self.schema,
                self.workspace_id,
                self.now,
                tenant_id=tenant_id,
            )
        except BaseException:
            self.ca.close()
            raise
        self._defaults = (token_lifetime, status_case, graph_quota, publication_delay)
        self.default_tenant = SimulatedTenant(
            self,
            tenant_id,
            tenant_name_for(tenant_id),
            self.graph.default_tenant,
            self.ingestion.default_dcr,
            self.workspace_id,
            LOCAL_DOMAINS,
        )
        self._added: dict[str, SimulatedTenant] = {}
        self._tenants_lock = threading.Lock()

    def _register_default_identities(self) -> None:
        """(Re-)register the secret app, the certificate app and the managed identity."""
        self.entra.register_app(self.client_id, secret=self.client_secret)
        self.entra.register_app(self.cert_client_id, certificate_pem=self.client_certificate.certificate_pem)
        self.entra.register_managed_identity(self.managed_identity_client_id)
        if self._started:
            self._register_federation()

    def _register_federation(self) -> None:
        """The multi-tenant app trusts the managed identity (needs Entra's URL: after start)."""
        self.entra.add_federated_credential(
            self.federated_client_id,
            issuer=self.entra.exchange_issuer(),
            subject=self.managed_identity_object_id,
        )

    @property
    def federated_client_id(self) -> str:
        """The app whose federated credential trusts the managed identity: ``client_id`` itself."""
        return self.client_id

    @property
    def managed_identity_object_id(self) -> str:
        """The managed identity's object (principal) id: the subject of its exchange token."""
        identity = self.entra.managed_identity(self.managed_identity_client_id)
        if identity is None:
            raise RuntimeError("the default managed identity is not registered")
        return identity.object_id

    # ---------------------------------------------------------------- tenants
    def add_tenant(
        self,
        tenant_id: str | None = None,
        *,
        name: str | None = None,
        domains: tuple[str, ...] | None = None,
        graph_quota: tuple[int, float] | None = None,
        publication_delay: timedelta | None = None,
    ) -> SimulatedTenant:
        """Add a customer tenant served by the same servers; returns it.

        Entra learns the tenant and both default apps get its admin consent (own service
        principals, same client ids, secret and certificate); Graph serves its records
        (empty), quota, domains and flags; ingestion gets a new DCR with the same streams
        and the query API a new workspace showing that DCR's rows.

        Args:
            tenant_id: its GUID (default: a new one).
            name: its ``TENANTS`` name (default ``t-`` + the id's first 8 hex digits).
            domains: its mail domains (default ``<name>.example.com`` and ``<name>.example.net``).
            graph_quota: ``(requests, seconds)`` of its Graph quota (default: the simulator's).
            publication_delay: its Graph publication delay (default: the simulator's).

        Raises:
            ValueError: the id or name is taken, or the name breaks the ``TENANTS`` rules.
        """
        tid = tenant_id or str(uuid.uuid4())
        label = name or tenant_name_for(tid)
        if not _TENANT_NAME.fullmatch(label) or "--" in label:
            raise ValueError(f"tenant name {label!r} breaks the TENANTS rules ([a-z0-9-], 1-24, no --)")
        own_domains = (
            tuple(domains) if domains is not None else (f"{label}.example.com", f"{label}.example.net")
        )
        _, _, default_quota, default_delay = self._defaults
        with self._tenants_lock:
            taken = [self.default_tenant, *self._added.values()]
            if any(t.tenant_id.lower() == tid.lower() for t in taken):
                raise ValueError(f"tenant {tid} exists already")
            if any(t.name == label for t in taken):
                raise ValueError(f"a tenant is named {label!r} already")
            self.entra.add_tenant(tid)
            for client_id in (self.client_id, self.cert_client_id):
                self.entra.consent(tid, client_id)
            graph = self.graph.add_tenant(
                tid,
                quota=graph_quota or default_quota,
                publication_delay=default_delay if publication_delay is None else publication_delay,
                domains=own_domains,
                initial_domain=f"{label}.onmicrosoft.com",
            )
            dcr = self.ingestion.add_dcr()
            workspace_id = str(uuid.uuid4())
            self.logs_query.add_workspace(workspace_id, dcr)
            tenant = SimulatedTenant(self, tid, label, graph, dcr, workspace_id, own_domains)
            self._added[tid.lower()] = tenant
        return tenant

    def remove_tenant(self, tenant: SimulatedTenant | str) -> None:
        """Forget an added tenant everywhere (Entra, Graph, its DCR and workspace)."""
        tid = tenant.tenant_id if isinstance(tenant, SimulatedTenant) else tenant
        with self._tenants_lock:
            removed = self._added.pop(tid.lower(), None)
        if removed is None:
            raise KeyError(f"no added tenant {tid}")
        self.entra.remove_tenant(removed.tenant_id)
        self.graph.remove_tenant(removed.tenant_id)
        self.ingestion.remove_dcr(removed.dcr_immutable_id)
        self.logs_query.remove_workspace(removed.workspace_id)

    @property
    def tenants(self) -> tuple[SimulatedTenant, ...]:
        """Every tenant, the default one first."""
        with self._tenants_lock:
            return (self.default_tenant, *self._added.values())

    def tenant(self, key: str) -> SimulatedTenant:
        """A tenant by id (any case) or name (KeyError if none)."""
        for tenant in self.tenants:
            if key.lower() in (tenant.tenant_id.lower(), tenant.name):
                return tenant
        raise KeyError(key)

    def tenants_setting(self, own_destination: bool = True) -> str:
        """The ``TENANTS`` value (JSON) listing every tenant, the default one first.

        Args:
            own_destination: each added tenant with its own DCR and workspace; ``False``:
                every tenant writes to the deployment's table (shared). The default tenant's
                entry never names a destination (it is the deployment's own).
        """
        entries = [self.default_tenant.tenant_entry(own_destination=False)]
        entries += [tenant.tenant_entry(own_destination) for tenant in self.tenants[1:]]
        return json.dumps(entries, separators=(",", ":"))

    # -------------------------------------------------------------- lifecycle
    @property
    def servers(self) -> tuple[SimulatedHttpServer, ...]:
        """Every server, in start order."""
        return (self.entra, self.managed_identity, self.graph, self.ingestion, self.logs_query)

    def start(self) -> Simulator:
        """Start every server (idempotent). A stopped simulator cannot restart: its CA is gone."""
        if self._closed:
            raise RuntimeError("this Simulator was stopped; create a new one")
        if not self._started:
            try:
                for server in self.servers:
                    server.start()
            except BaseException:
                self.stop()
                raise
            self._started = True
            self._register_federation()
        return self

    def stop(self) -> None:
        """Stop every server and delete the CA's files."""
        for server in self.servers:
            server.stop()
        self.ca.close()
        self._started = False
        self._closed = True

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ state
    def now(self) -> datetime:
        """The data clock's current time (aware UTC)."""
        return _aware(self.clock())

    @property
    def ca_bundle_path(self) -> str:
        """Path of the test CA's PEM file."""
        return self.ca.ca_bundle_path

    @property
    def authority(self) -> str:
        """msal authority URL: ``{entra}/{tenant}``."""
        return f"{self.entra.url}/{self.tenant_id}"

    def connector_env(self, auth_mode: AuthMode = "client_secret") -> dict[str, str]:
        """Environment variables that point the connector at this simulator.

        Args:
            auth_mode: ``client_secret`` (default; the documented key set),
                ``certificate`` (``client_certificate`` modes with
                ``CLIENT_CERTIFICATE_PATH``, uses the certificate app) or
                ``managed_identity`` (auth modes set to ``managed_identity``).
        """
        env = {
            "TENANT_ID": self.tenant_id,
            "CLIENT_ID": self.client_id,
            "CLIENT_SECRET": self.client_secret,
            "GRAPH_AUTH_MODE": "client_secret",
            "AZURE_AUTH_MODE": "client_secret",
            "AUTHORITY_HOST": self.entra.url,
            "GRAPH_BASE_URL": self.graph.url,
            "GRAPH_SCOPE": f"{GRAPH_RESOURCE}/.default",
            "INGESTION_ENDPOINT": self.ingestion.url,
            "DCR_IMMUTABLE_ID": self.dcr_immutable_id,
            "DCR_STREAM_NAME": self.stream_name,
            "HEALTH_STREAM_NAME": self.health_schema.stream,
            "DETAIL_STREAM_NAME": self.detail_schema.stream,
            "INGESTION_SCOPE": f"{MONITOR_RESOURCE}/.default",
            "LOGS_QUERY_ENDPOINT": self.logs_query.url,
            "REQUESTS_CA_BUNDLE": self.ca_bundle_path,
            "SSL_CERT_FILE": self.ca_bundle_path,
            "LOCAL_DOMAINS": ",".join(LOCAL_DOMAINS),
            "IDENTITY_ENDPOINT": self.managed_identity.endpoint,
            "IDENTITY_HEADER": self.managed_identity.identity_header,
        }
        if auth_mode == "certificate":
            env.pop("CLIENT_SECRET")
            env.update(
                {
                    "CLIENT_ID": self.cert_client_id,
                    "GRAPH_AUTH_MODE": "client_certificate",
                    "AZURE_AUTH_MODE": "client_certificate",
                    "CLIENT_CERTIFICATE_PATH": str(self.client_certificate.pem_path),
                }
            )
        elif auth_mode == "managed_identity":
            env.pop("CLIENT_SECRET")
            env.pop("CLIENT_ID")
            env.update(
                {
                    "MANAGED_IDENTITY_CLIENT_ID": self.managed_identity_client_id,
                    "GRAPH_AUTH_MODE": "managed_identity",
                    "AZURE_AUTH_MODE": "managed_identity",
                }
            )
        return env

    def reset(self) -> None:
        """Clear data, faults, logs, counters and quota; restore default flags.

        Registered apps, secrets, the CA, URLs and the clock are kept, so one
        running simulator can serve many tests. Tenants added with :meth:`add_tenant`
        are removed; the default tenant's consent is restored.
        """
        token_lifetime, status_case, graph_quota, publication_delay = self._defaults
        for tenant in self.tenants[1:]:
            self.remove_tenant(tenant)
        for server in self.servers:
            server.reset()
        self.entra.token_lifetime = token_lifetime
        self._register_default_identities()
        self.graph.status_case = status_case
        self.graph.quota.limit, self.graph.quota.window_seconds = graph_quota
        self.graph.store.publication_delay = publication_delay
