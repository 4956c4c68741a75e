"""Start Azurite's blob service (and, when asked, its queue service) on free loopback ports (tests, demo).

The queue service is a second process (``azurite-queue``) started only where queues are
used (queued backfills), so the many tests that need blobs alone do not pay for it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "devstoreaccount1"
# Azurite's published development key (not a secret).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="  # noqa: S105
_LISTENING = re.compile(r"(Blob|Queue) service (?:is )?successfully listens? on (http://[\d.]+:(\d+))")


def azurite_executable(service: str = "blob") -> str:
    """``azurite-blob`` or ``azurite-queue`` from the repository's node_modules (else the PATH)."""
    name = f"azurite-{service}"
    local = REPO_ROOT / "node_modules" / ".bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: run `npm ci` in the repository root (scripts/test.sh does)")
    return found


@dataclass
class Azurite:
    process: subprocess.Popen[str]
    port: int
    lines: list[str]
    queue_process: subprocess.Popen[str] | None = None
    queue_port: int | None = None

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def queue_endpoint(self) -> str | None:
        return None if self.queue_port is None else f"http://127.0.0.1:{self.queue_port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        queue = "" if self.queue_endpoint is None else f"QueueEndpoint={self.queue_endpoint};"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.blob_endpoint};{queue}"
        )

    def start_queues(self, workdir: Path, timeout: float = 60.0) -> None:
        """Start the queue service beside the blob service (once); the connection string then names it."""
        if self.queue_process is None:
            self.queue_process, self.queue_port, _ = _start_service("queue", workdir, timeout, self.lines)

    def stop(self) -> None:
        for process in (self.process, self.queue_process):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()


def start_azurite(workdir: Path, timeout: float = 60.0, *, queues: bool = False) -> Azurite:
    """Run ``azurite-blob`` (and ``azurite-queue`` if ``queues``) in memory on port 0; wait for the ports."""
    lines: list[str] = []
    process, port, _ = _start_service("blob", workdir, timeout, lines)
    server = Azurite(process=process, port=port, lines=lines)
    if queues:
        server.start_queues(workdir, timeout)
    return server


def _start_service(
    service: str, workdir: Path, timeout: float, lines: list[str]
) -> tuple[subprocess.Popen[str], int, list[str]]:
    command = [
        azurite_executable(service),
        f"--{service}Host",
        "127.0.0.1",
        f"--{service}Port",
        "0",
        "--skipApiVersionCheck",
        "--disableTelemetry",
        "--inMemoryPersistence",
    ]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=workdir,
        env={**os.environ, "NO_COLOR": "1"},
    )
    port: list[int] = []
    ready = threading.Event()

    def pump() -> None:
        if process.stdout is None:  # pragma: no cover - stdout=PIPE always gives a stream
            return
        for line in process.stdout:
            lines.append(line.rstrip())
            match = _LISTENING.search(line)
            if match and not port:
                port.append(int(match.group(3)))
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.1):
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"Azurite {service} did not start in time:\n" + "\n".join(lines))
    if not port:
        raise RuntimeError(f"Azurite {service} exited before listening:\n" + "\n".join(lines))
    return process, port[0], lines
