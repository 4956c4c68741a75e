"""One queue worker process: the Functions host's handling of one backfill message, killable for real.

The crash harness SIGKILLs it, so it does in a process of its own what
tests/integration/queue_host.py does in the test's: receive one message from the
Azurite queue hidden for ``--visibility-seconds`` (renewed in the background while the
function runs, as the host's queue listener does, so a live worker keeps it and a
killed one lets it reappear within that time with its dequeue count one higher),
base64-decode it, call the app's queue function from ``app.get_functions()`` with an
``azure.functions.QueueMessage``, and delete the message on success, release it on an
exception, or move it to ``<queue>-poison`` once a failed delivery's dequeue count
reaches ``maxDequeueCount``. Like the host (WebJobs ``QueueProcessor``), a message
received with a dequeue count above ``maxDequeueCount`` is moved to the poison queue
without a call: the deliveries before it were killed, so none failed "for good".

``--hold-before-delete`` stops between the function's success and the delete (the
host's own crash window): the harness kills it there, so the message comes back and
its slice runs again. Lines on stdout tell the harness where the worker is::

    received <dequeue count> <slice feed>
    ran | failed <error class> | poisoned | empty
    deleted
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import sys
import threading
import time
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient

from connector.queued import SliceMessageError, decode_message
from tests.integration.queue_host import (
    host_max_dequeue_count,
    host_message,
    load_function_app,
    queue_function,
)


def _say(line: str) -> None:
    print(line, flush=True)


def _receive(client: QueueClient, visibility: int, wait: float) -> Any | None:
    """The next visible message (polling up to ``wait`` seconds), hidden for ``visibility`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        for message in client.receive_messages(messages_per_page=1, visibility_timeout=visibility):
            return message
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


class _Renewal:
    """Keeps a received message hidden while the function runs; holds its current pop receipt."""

    def __init__(self, client: QueueClient, message: Any, visibility: int) -> None:
        self._client = client
        self._id = message.id
        self.receipt: str = message.pop_receipt
        self._visibility = visibility
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._visibility / 3):
            self.update(self._visibility)

    def update(self, visibility: int) -> None:
        with self._lock:
            answer = self._client.update_message(
                self._id, pop_receipt=self.receipt, visibility_timeout=visibility
            )
            self.receipt = answer.pop_receipt

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="process one backfill queue message as the host would")
    parser.add_argument("--visibility-seconds", type=int, default=2)
    parser.add_argument("--wait-seconds", type=float, default=0.0, help="poll this long for a message")
    parser.add_argument("--hold-before-delete", action="store_true")
    args = parser.parse_args(argv)
    connection, name = os.environ["STORAGE_CONNECTION_STRING"], os.environ["BACKFILL_QUEUE"]
    client = QueueClient.from_connection_string(connection, name)
    poison = QueueClient.from_connection_string(connection, f"{name}-poison")
    with contextlib.suppress(ResourceExistsError):
        poison.create_queue()
    function = queue_function(load_function_app()).get_user_function()
    message = _receive(client, args.visibility_seconds, args.wait_seconds)
    if message is None:
        _say("empty")
        return 0
    text = base64.b64decode(message.content).decode("utf-8")
    try:
        feed = decode_message(text).feed
    except SliceMessageError:
        feed = "-"
    _say(f"received {message.dequeue_count} {feed}")
    maximum = host_max_dequeue_count()
    if message.dequeue_count > maximum:
        poison.send_message(message.content)
        client.delete_message(message.id, message.pop_receipt)
        _say("poisoned")
        return 0
    renewal = _Renewal(client, message, args.visibility_seconds)
    try:
        function(host_message(message, text))
    except Exception as err:  # noqa: BLE001 - the host catches every failure of the function
        renewal.stop()
        if message.dequeue_count >= maximum:
            poison.send_message(message.content)
            client.delete_message(message.id, renewal.receipt)
            _say(f"failed {err.__class__.__name__}")
            _say("poisoned")
        else:
            renewal.update(0)
            _say(f"failed {err.__class__.__name__}")
        return 0
    renewal.stop()
    _say("ran")
    if args.hold_before_delete:
        time.sleep(120)  # the harness kills the worker here
    client.delete_message(message.id, renewal.receipt)
    _say("deleted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
