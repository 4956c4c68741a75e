"""Start Azurite's blob service (npm ``azurite``) on a free loopback port (tests and the demo)."""

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
_LISTENING = re.compile(r"Blob service (?:is )?successfully listens? on (http://[\d.]+:(\d+))")


def azurite_blob_executable() -> str:
    local = REPO_ROOT / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    found = shutil.which("azurite-blob")
    if found is None:
        raise RuntimeError(
            "azurite-blob not found: run `npm ci` in the repository root (scripts/test.sh does)"
        )
    return found


@dataclass
class Azurite:
    process: subprocess.Popen[str]
    port: int
    lines: list[str]

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start_azurite(workdir: Path, timeout: float = 60.0) -> Azurite:
    """Run ``azurite-blob`` in memory on port 0 and wait for the port it took."""
    command = [
        azurite_blob_executable(),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
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
    lines: list[str] = []
    port: list[int] = []
    ready = threading.Event()

    def pump() -> None:
        if process.stdout is None:  # pragma: no cover - stdout=PIPE always gives a stream
            return
        for line in process.stdout:
            lines.append(line.rstrip())
            match = _LISTENING.search(line)
            if match and not port:
                port.append(int(match.group(2)))
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.1):
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("Azurite did not start in time:\n" + "\n".join(lines))
    if not port:
        raise RuntimeError("Azurite exited before listening:\n" + "\n".join(lines))
    return Azurite(process=process, port=port[0], lines=lines)
