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

import secrets
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Literal

from connector.schema import TableSchema, load_health_schema, load_table_schema

from .entra import GRAPH_RESOURCE, MONITOR_RESOURCE, Claims, EntraServer, ManagedIdentityServer
from .graph import DEFAULT_LOCAL_DOMAINS, GraphServer, MessageTraceStore, StatusCase
from .http import Request, Response, SimulatedHttpServer
from .ingestion import IngestionServer
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
        client_id, client_secret: the confidential app (secret credential).
        cert_client_id, client_certificate: an app using a certificate.
        managed_identity_client_id: the system-assigned managed identity.
        dcr_immutable_id, stream_name, schema: the ingestion target.
        workspace_id: the workspace the logs query API answers for.
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
                (self.health_schema,),
            )
            self.workspace_id = str(uuid.uuid4())
            self.logs_query = LogsQueryServer(
                context, self.entra.validate_bearer, self.ingestion, self.schema, self.workspace_id, self.now
            )
        except BaseException:
            self.ca.close()
            raise
        self._defaults = (token_lifetime, status_case, graph_quota, publication_delay)

    def _register_default_identities(self) -> None:
        """(Re-)register the secret app, the certificate app and the managed identity."""
        self.entra.register_app(self.client_id, secret=self.client_secret)
        self.entra.register_app(self.cert_client_id, certificate_pem=self.client_certificate.certificate_pem)
        self.entra.register_managed_identity(self.managed_identity_client_id)

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
        running simulator can serve many tests.
        """
        token_lifetime, status_case, graph_quota, publication_delay = self._defaults
        for server in self.servers:
            server.reset()
        self.entra.token_lifetime = token_lifetime
        self._register_default_identities()
        self.graph.status_case = status_case
        self.graph.quota.limit, self.graph.quota.window_seconds = graph_quota
        self.graph.store.publication_delay = publication_delay
