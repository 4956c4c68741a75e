"""A TCP proxy in front of Azurite that can kill the connector in the middle of a checkpoint write."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Trigger:
    marker: bytes
    occurrence: int
    landed: bool  # False: kill before the write reaches storage; True: after storage answered
    kill: Callable[[], None]
    seen: int = 0


def requests_in(stream: bytes) -> list[tuple[str, bytes]]:
    """The HTTP/1.1 requests in one connection's byte stream: (request line, body), by Content-Length."""
    requests: list[tuple[str, bytes]] = []
    rest = stream
    while b"\r\n\r\n" in rest:
        head, rest = rest.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        requests.append((lines[0], bytes(rest[:length])))
        rest = rest[length:]
    return requests


class KillingBlobProxy:
    """Forwards 127.0.0.1:<port> to Azurite; an armed trigger kills the client around a PUT."""

    def __init__(self, upstream_port: int, *, record: bool = False) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._trigger: _Trigger | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._record = record
        self.sent: list[bytes] = []
        """Every byte stream a client sent through the proxy, one entry per connection (for scans)."""
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def arm(self, marker: bytes, occurrence: int, *, landed: bool, kill: Callable[[], None]) -> None:
        with self._lock:
            self._trigger = _Trigger(marker, occurrence, landed, kill)

    def disarm(self) -> None:
        with self._lock:
            self._trigger = None

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _matches(self, chunk: bytes) -> _Trigger | None:
        with self._lock:
            trigger = self._trigger
            if (
                trigger is None
                or not chunk.startswith(b"PUT ")
                or trigger.marker not in chunk.split(b"\r\n", 1)[0]
            ):
                return None
            trigger.seen += 1
            if trigger.seen != trigger.occurrence:
                return None
            self._trigger = None
            return trigger

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self._upstream)
        except OSError:
            client.close()
            return
        kill_on_response = threading.Event()
        fired: list[_Trigger] = []

        def downstream() -> None:
            try:
                while data := upstream.recv(65536):
                    if kill_on_response.is_set():
                        fired[0].kill()
                        return
                    client.sendall(data)
            except OSError:
                pass
            finally:
                with contextlib.suppress(OSError):
                    client.close()

        threading.Thread(target=downstream, daemon=True).start()
        stream = bytearray()
        with self._lock:
            self.sent.append(b"")
            index = len(self.sent) - 1
        try:
            while data := client.recv(65536):
                if self._record:
                    stream += data
                    with self._lock:
                        self.sent[index] = bytes(stream)
                trigger = self._matches(data)
                if trigger is not None:
                    if not trigger.landed:
                        trigger.kill()
                        return
                    fired.append(trigger)
                    kill_on_response.set()
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                upstream.close()
            with contextlib.suppress(OSError):
                client.close()
