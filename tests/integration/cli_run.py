"""Run the command line in-process and capture what it prints (for tests through the CLI)."""

from __future__ import annotations

import io

from connector.cli import main


def run_cli(*args: str) -> tuple[int, str]:
    """``python -m connector --no-progress ARGS``: the exit code and stdout."""
    out = io.StringIO()
    code = main(["--no-progress", *args], out=out)
    return code, out.getvalue()
