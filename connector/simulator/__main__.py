"""``python -m connector.simulator serve``: run the simulator for manual demos.

Why: a developer can point a locally running connector (or curl) at the
simulator without writing a test. It generates traffic for the last two days
(plus the next day, which appears as the real clock reaches it, 5-10 minutes
late, like the real service), prints the connector environment as
``export K=V`` lines and serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta
from types import FrameType

from . import Simulator, generate_traffic, plan_status_changes, realistic_visibility


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m connector.simulator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the simulator and serve until Ctrl-C")
    serve.add_argument(
        "--messages", type=int, default=3000, help="messages in the past 2 days (default 3000)"
    )
    serve.add_argument(
        "--future-hours", type=int, default=24, help="hours of traffic that appears live (default 24)"
    )
    serve.add_argument("--seed", type=int, default=1, help="traffic seed (default 1)")
    args = parser.parse_args(argv)

    now = datetime.now(UTC)
    start = now - timedelta(days=2)
    end = now + timedelta(hours=args.future_hours)
    total_hours = 48 + args.future_hours
    messages = max(1, args.messages * total_hours // 48)
    rows = generate_traffic(start, end, messages, seed=args.seed)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    with Simulator() as sim:
        sim.graph.add(rows, visible_at=realistic_visibility(args.seed))
        sim.graph.schedule(plan_status_changes(rows, seed=args.seed))
        for key, value in sim.connector_env().items():
            print(f"export {key}={shlex.quote(value)}")
        print(
            f"# {len(rows)} trace rows from {start:%Y-%m-%d %H:%M}Z to {end:%Y-%m-%d %H:%M}Z; Ctrl-C to stop",
            file=sys.stderr,
        )
        sys.stdout.flush()
        signal.signal(signal.SIGTERM, on_signal)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
