"""The Storage queues of the function app: backfill slices and tenant runs; count a poison queue.

The queue lives in the checkpoints' storage account: from ``STORAGE_CONNECTION_STRING``
(its ``QueueEndpoint``, as Azurite's has) or, beside ``STORAGE_ACCOUNT_URL``, the
account's queue endpoint with the same credential. Messages are base64 text
(``TextBase64EncodePolicy``), the Functions host's default ``messageEncoding``.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from connector.auth import azure_credential
from connector.errors import ConfigError, ConnectorError, ErrorKind
from connector.fanout import TENANT_RUN_TTL, TenantRun, encode_tenant_run
from connector.queued import SliceMessage, encode_message
from connector.redact import scrub
from connector.settings import Settings, StoreKind
from connector.transport import describe_failure, timeouts, tls_options

logger = logging.getLogger(__name__)

POISON_SUFFIX = "-poison"
"""The Functions host moves a message that failed ``maxDequeueCount`` times to ``<queue>-poison``."""


class QueueError(ConnectorError):
    """The backfill queue could not be reached or refused the call; the message says what to fix."""


def queue_error(action: str, err: AzureError) -> QueueError:
    """The error for a failed queue call, with its cause's kind and the role to grant when refused."""
    kind, detail = describe_failure(err)
    if kind is ErrorKind.PERMISSION:
        detail += (
            ". Give the identity 'Storage Queue Data Contributor' on the storage account "
            "(or fix STORAGE_CONNECTION_STRING)"
        )
    return QueueError(scrub(f"{action}: {detail}"), kind=kind)


def queue_service_url(account_url: str) -> str:
    """The queue endpoint of the account whose blob endpoint is ``account_url``.

    Raises:
        ConfigError: the URL is not an account's ``<name>.blob.<suffix>`` endpoint (an
            emulator's path-style URL has no queue twin: give a connection string instead).
    """
    parts = urlsplit(account_url)
    host = parts.hostname or ""
    name, _, rest = host.partition(".")
    if not rest.startswith("blob."):
        raise ConfigError(
            [
                (
                    "STORAGE_ACCOUNT_URL",
                    "backfill --on-azure derives the queue endpoint from https://<account>.blob.<suffix>; "
                    "for another URL set STORAGE_CONNECTION_STRING with a QueueEndpoint",
                )
            ]
        )
    return urlunsplit((parts.scheme, f"{name}.queue.{rest.removeprefix('blob.')}", "", "", ""))


class SliceQueue:
    """A queue of the function app (``BACKFILL_QUEUE`` or ``TENANT_QUEUE``) and its poison queue."""

    def __init__(self, queue: QueueClient, poison: QueueClient) -> None:
        self._queue = queue
        self._poison = poison

    @property
    def name(self) -> str:
        """The queue's name (``BACKFILL_QUEUE`` or ``TENANT_QUEUE``)."""
        return str(self._queue.queue_name)

    def ensure(self) -> None:
        """Create the queue if it is missing (the Bicep creates it; a local Azurite has none)."""
        try:
            self._queue.create_queue()
        except ResourceExistsError:
            pass
        except AzureError as err:
            raise queue_error(f"cannot create or reach the queue {self.name}", err) from err

    def send(self, message: SliceMessage, *, delay: timedelta = timedelta(0)) -> None:
        """Enqueue one slice, visible after ``delay``."""
        try:
            self._queue.send_message(
                encode_message(message), visibility_timeout=int(delay.total_seconds()) or None
            )
        except AzureError as err:
            raise queue_error(f"cannot enqueue {message.feed} on {self.name}", err) from err

    def send_tenant_run(self, run: TenantRun) -> None:
        """Enqueue one tenant's run of this tick; it expires after :data:`TENANT_RUN_TTL` unread."""
        try:
            self._queue.send_message(encode_tenant_run(run), time_to_live=int(TENANT_RUN_TTL.total_seconds()))
        except AzureError as err:
            raise queue_error(f"cannot enqueue the run of tenant {run.tenant} on {self.name}", err) from err

    def poison_count(self) -> int | None:
        """Messages in ``<queue>-poison`` (0 when the host made none); None when it cannot be read."""
        try:
            return int(self._poison.get_queue_properties().approximate_message_count or 0)
        except ResourceNotFoundError:
            return 0
        except AzureError as err:
            logger.warning("%s", queue_error(f"cannot read the poison queue {self.name}{POISON_SUFFIX}", err))
            return None

    def close(self) -> None:
        """Close both clients' connections."""
        self._queue.close()
        self._poison.close()


def build_slice_queue(settings: Settings) -> SliceQueue:
    """The queue ``BACKFILL_QUEUE`` names, in the checkpoints' storage account.

    Raises:
        ConfigError: the file store (no account), or an account URL with no queue twin.
    """
    return _build_queue(settings, settings.backfill_queue, "backfill on Azure")


def build_tenant_queue(settings: Settings) -> SliceQueue:
    """The queue ``TENANT_QUEUE`` names, in the checkpoints' storage account.

    Raises:
        ConfigError: the file store (no account), or an account URL with no queue twin.
    """
    return _build_queue(settings, settings.tenant_queue, "the timer's tenant runs (TENANTS)")


def _build_queue(settings: Settings, name: str, purpose: str) -> SliceQueue:
    """The queue ``name`` and its poison queue, in the checkpoints' storage account."""
    location = settings.checkpoint
    if location.kind is not StoreKind.BLOB:
        raise ConfigError(
            [
                (
                    "CHECKPOINT_STORE",
                    f"{purpose} needs the blob store (its queue is in the same account)",
                )
            ]
        )
    connect, read = timeouts(settings.http_timeout_seconds)
    options = {
        "connection_timeout": connect,
        "read_timeout": read,
        "message_encode_policy": TextBase64EncodePolicy(),
        "message_decode_policy": TextBase64DecodePolicy(),
        **tls_options(settings.ca_bundle),
    }

    if (
        location.connection_string
        and _names(location.connection_string, "BlobEndpoint")
        and not _names(location.connection_string, "QueueEndpoint")
    ):
        raise ConfigError(
            [
                (
                    "STORAGE_CONNECTION_STRING",
                    "names a BlobEndpoint but no QueueEndpoint: add the queue endpoint of the same account "
                    f"(Azurite: start azurite-queue too) for {purpose}",
                )
            ]
        )

    def client(name: str) -> QueueClient:
        if location.connection_string:
            return QueueClient.from_connection_string(location.connection_string, name, **options)
        return QueueClient(
            queue_service_url(location.account_url or ""),
            name,
            credential=azure_credential(settings),
            **options,
        )

    return SliceQueue(client(name), client(name + POISON_SUFFIX))


def _names(connection_string: str, key: str) -> bool:
    """True when the connection string sets ``key`` (keys are case-insensitive)."""
    return any(
        part.split("=", 1)[0].strip().lower() == key.lower() for part in connection_string.split(";") if part
    )
