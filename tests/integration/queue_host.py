"""A small stand-in for the Functions host's queue trigger, on an Azurite queue.

It does what the host does with a queue-triggered Python function: receive a message,
base64-decode its text (the host's default ``messageEncoding``), call the function from
``app.get_functions()`` with an ``azure.functions.QueueMessage`` (id, body, dequeue
count), delete the message on success, make it visible again on an exception, and move it
to ``<queue>-poison`` once a failed delivery's dequeue count reaches ``maxDequeueCount``.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.functions.queue import QueueMessage
from azure.storage.queue import QueueClient

ROOT = Path(__file__).resolve().parents[2]
FUNCTION_APP = ROOT / "function_app.py"


def host_max_dequeue_count() -> int:
    """``extensions.queues.maxDequeueCount`` as host.json sets it."""
    return int(json.loads((ROOT / "host.json").read_text())["extensions"]["queues"]["maxDequeueCount"])


def load_function_app() -> Any:
    """A fresh module object each time (get_functions() may be called once per app)."""
    spec = importlib.util.spec_from_file_location("function_app_queue_host", FUNCTION_APP)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def host_message(message: Any, text: str) -> QueueMessage:
    """What the Functions host hands the function for a received queue message whose body decodes to ``text``."""
    return QueueMessage(
        id=message.id,
        body=text.encode("utf-8"),
        dequeue_count=message.dequeue_count,
        pop_receipt=message.pop_receipt,
    )


def queue_function(module: Any, queue_setting: str = "%BACKFILL_QUEUE%") -> Any:
    """The app's function triggered by the queue that ``queue_setting`` names (as the host resolves it)."""
    (function,) = [
        f
        for f in module.app.get_functions()
        if any(b.type == "queueTrigger" and b.queue_name == queue_setting for b in f.get_bindings())
    ]
    return function


@dataclass
class Delivery:
    """One call of the function: the slice message's body, its dequeue count, and how it ended."""

    body: dict[str, Any] | str
    dequeue_count: int
    error: BaseException | None


@dataclass
class QueueHost:
    """Receives from ``queue`` and runs ``function`` as the host would."""

    connection_string: str
    queue: str
    function: Callable[[QueueMessage], None]
    max_dequeue_count: int = field(default_factory=host_max_dequeue_count)
    deliveries: list[Delivery] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.client = QueueClient.from_connection_string(self.connection_string, self.queue)
        self.poison = QueueClient.from_connection_string(self.connection_string, f"{self.queue}-poison")
        for client in (self.client, self.poison):
            with contextlib.suppress(ResourceExistsError):
                client.create_queue()

    def receive(self) -> Any | None:
        """The next visible message, hidden for a minute while it is processed (or None)."""
        for message in self.client.receive_messages(messages_per_page=1, visibility_timeout=60):
            return message
        return None

    def process(self, message: Any, between: Callable[[], None] | None = None) -> Delivery:
        """One delivery of ``message``: call, then delete, release or poison it."""
        text = base64.b64decode(message.content).decode("utf-8")
        try:
            body: dict[str, Any] | str = json.loads(text)
        except ValueError:
            body = text
        error: BaseException | None = None
        try:
            self.function(host_message(message, text))
        except Exception as err:  # noqa: BLE001 - the host catches every failure of the function
            error = err
        if error is None:
            self.client.delete_message(message)
        elif message.dequeue_count >= self.max_dequeue_count:
            self.poison.send_message(message.content)
            self.client.delete_message(message)
        else:
            self.client.update_message(message, visibility_timeout=0)
        delivery = Delivery(body=body, dequeue_count=message.dequeue_count, error=error)
        self.deliveries.append(delivery)
        if between is not None:
            between()
        return delivery

    def drain(self, *, limit: int = 200, between: Callable[[], None] | None = None) -> list[Delivery]:
        """Process messages until the queue has none visible; ``between`` runs after each delivery."""
        done: list[Delivery] = []
        for _ in range(limit):
            message = self.receive()
            if message is None:
                return done
            done.append(self.process(message, between))
        raise AssertionError(f"the queue still had messages after {limit} deliveries")

    def poison_count(self) -> int:
        return int(self.poison.get_queue_properties().approximate_message_count or 0)

    def send_raw(self, text: str) -> None:
        """Enqueue ``text`` base64-encoded, as a producer other than the connector might."""
        self.client.send_message(base64.b64encode(text.encode("utf-8")).decode("ascii"))
