"""Benchmarks (b) CPU against the floor, (d) upload size, (f) import time. Figures, not assertions.

(b) One catch-up (``python -m connector run``) as a child process against the
simulator and Azurite; its own user+sys CPU (``os.wait4``, not the simulator's,
which runs in this process) gives records per connector CPU-second. The floor is
the least any connector must do with the same data, in one process and with the
same JSON library (stdlib ``json``) and gzip level: parse the Graph pages' JSON
(5,000 records each, built as the simulator sends them), serialise the stored rows
(:func:`connector.batching.encode_row`) and gzip them in request-sized bodies
(:func:`connector.ingestion.gzip_body`). A second run under cProfile (CPU clock)
gives the breakdown, including the share spent encoding checkpoints (the lead's
journal replaces that; the figure without it is printed too).

(d) Mean uncompressed request body over 1 MB (1,000,000 bytes), from the
simulator's log of accepted mail-stream requests.

(f) ``import function_app`` in a fresh interpreter, median of several.

    .venv/bin/python scripts/bench/cpu.py --messages 105000   # ~200 k records
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from connector.batching import DEFAULT_BATCH_BUDGET_BYTES, encode_row, join_body  # noqa: E402
from connector.ingestion import gzip_body  # noqa: E402
from connector.intent import intent_for  # noqa: E402
from connector.ledger import DedupLedger, key_state  # noqa: E402
from connector.mapping import RowMapper, parse_trace_record  # noqa: E402
from connector.precedence import SliceObservations  # noqa: E402
from connector.runner import settle_collector  # noqa: E402
from connector.simulator import LOCAL_DOMAINS, Simulator, generate_traffic  # noqa: E402
from connector.simulator.azurite import start_azurite  # noqa: E402

PAGE_RECORDS = 5000
ONE_MB = 1_000_000
TARGET_FLOOR_RATIO = 0.50
TARGET_UPLOAD_FILL = 0.90
TARGET_IMPORT_SECONDS = 1.5

# The child, profiled on its own CPU clock (wall time would count waiting for the simulator).
_PROFILED_CHILD = """
import cProfile, sys, time
sys.argv = ["connector", "--no-progress", "run"]
from connector.cli import main
profile = cProfile.Profile(time.process_time)
code = 1
try:
    code = profile.runcall(main)
finally:
    profile.dump_stats({out!r})
sys.exit(code)
"""

# (label, how to find it in the profile: file suffix and function name; cumulative CPU)
_PARTS = [
    ("checkpoint encoding", "connector/checkpoint.py", "encode_checkpoint"),
    ("record parsing (parse_trace_record)", "connector/mapping.py", "parse_trace_record"),
    ("row mapping (RowMapper.to_row)", "connector/mapping.py", "to_row"),
    ("row JSON (encode_row, once per row)", "connector/batching.py", "encode_row"),
    ("gzip (gzip_body)", "connector/ingestion.py", "gzip_body"),
    ("Graph JSON (json.loads of pages)", "json/decoder.py", "raw_decode"),
    ("ledger decisions", "connector/ledger.py", "decide"),
    ("checkpoint saves (store.save, all)", "connector/store.py", "save"),
    ("uploads (sink.upload, all)", "connector/ingestion.py", "upload"),
]


def line(label: str, value: str, target: str = "") -> None:
    print(f"{label:<44} {value:<28} {target}")


def catch_up(
    sim: Simulator, connection: str, hours: float, *, profile: Path | None
) -> tuple[float, float, str]:
    """One catch-up run in a child; returns (user+sys CPU seconds, wall seconds, stdout)."""
    env = {
        **os.environ,
        **sim.connector_env(),
        "STORAGE_CONNECTION_STRING": connection,
        "CHECKPOINT_CONTAINER": f"bench{time.monotonic_ns()}",
        "INITIAL_LOOKBACK_HOURS": str(hours + 1),
        "RUN_TIME_BUDGET_SECONDS": "3600",
        # CPU and throughput, not the quota (benchmark (a)): the governor must not pace this run.
        "GRAPH_QUOTA_REQUESTS": "10000",
        "PYTHONPATH": str(ROOT),
    }
    command = (
        [sys.executable, "-c", _PROFILED_CHILD.format(out=str(profile))]
        if profile
        else [sys.executable, "-m", "connector", "--no-progress", "run"]
    )
    started = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode()
        if child.returncode != 0:
            sys.stderr.write(stdout + err.read().decode())
            raise SystemExit(f"the connector run failed with exit code {child.returncode}")
    return usage.ru_utime + usage.ru_stime, wall, stdout


def startup_cpu() -> float:
    """User+sys CPU of a child that only starts and imports the CLI (paid once per run, not per record)."""
    child = subprocess.Popen([sys.executable, "-c", "import connector.cli"], cwd=ROOT)
    _, _, usage = os.wait4(child.pid, 0)
    child.returncode = 0
    return usage.ru_utime + usage.ru_stime


def floor_seconds(graph_rows: list[dict[str, Any]], stored: list[dict[str, Any]]) -> float:
    """CPU seconds to parse the Graph pages, serialise the rows and gzip them, in one process."""
    pages = graph_pages(graph_rows)
    # The inputs (every page and every stored row) and the simulator live in this process; moved out
    # of the collector's reach, so the floor does not pay for scanning them (the connector holds none).
    gc.collect()
    gc.freeze()
    started = time.process_time()
    for page in pages:
        json.loads(page)
    body: list[bytes] = []
    size = 2
    for row in stored:
        encoded = encode_row(row)
        if body and size + 1 + len(encoded) > DEFAULT_BATCH_BUDGET_BYTES:
            gzip_body(join_body(body))
            body, size = [], 2
        size += len(encoded) + (1 if body else 0)
        body.append(encoded)
    if body:
        gzip_body(join_body(body))
    spent = time.process_time() - started
    gc.unfreeze()
    return spent


def graph_pages(graph_rows: list[dict[str, Any]]) -> list[bytes]:
    """The Graph pages of ``graph_rows`` as the simulator sends them (5,000 records each)."""
    pages = []
    for first in range(0, len(graph_rows), PAGE_RECORDS):
        values = [
            {"@odata.type": "#microsoft.graph.exchangeMessageTrace", **row}
            for row in graph_rows[first : first + PAGE_RECORDS]
        ]
        document = {"@odata.context": "https://graph/v1.0/$metadata#messageTraces", "value": values}
        pages.append(json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    return pages


def per_row_steps(graph_rows: list[dict[str, Any]]) -> list[tuple[str, float, bool]]:
    """CPU microseconds per row of each step, the floor's and the connector's own, in one process.

    The connector's steps are its pure core's (the same functions the loop calls, in its
    order, page by page as a run streams them, with the collector settled as
    ``settle_collector`` leaves it): what the core costs before any HTTP, SDK or storage
    call. Returns (step, microseconds per row, whether the floor has the step too).
    """
    pages = graph_pages(graph_rows)
    thresholds = gc.get_threshold()
    settle_collector()  # as the connector's process runs: young collections every 20,000 objects
    spent: dict[tuple[str, bool], float] = {}
    mapper = RowMapper(LOCAL_DOMAINS)
    ledger = DedupLedger()
    count = 0

    def timed(label: str, floor: bool, work: Any, *args: Any) -> Any:
        started = time.process_time()
        result = work(*args)
        spent[label, floor] = spent.get((label, floor), 0.0) + time.process_time() - started
        return result

    def hashes(parsed: list[Any]) -> list[Any]:
        return [(state, state.hexdigest()) for state in (key_state(r.trace_id, r.recipient) for r in parsed)]

    def precedence(parsed: list[Any], hashed: list[Any]) -> list[Any]:
        observations: SliceObservations[Any] = SliceObservations()
        for record, (_, key) in zip(parsed, hashed, strict=True):
            observations.hold(_Observed(key, record.received, record.status))
        return list(observations.release_all())

    def decide(parsed: list[Any], hashed: list[Any]) -> list[Any]:
        return [ledger.decide(key, r.received, r.status) for r, (_, key) in zip(parsed, hashed, strict=True)]

    def to_rows(parsed: list[Any], decisions: list[Any], hashed: list[Any]) -> list[Any]:
        return [
            mapper.to_row(r, revision=d.entry.revision, previous_status=d.previous_status, key_state=state)
            for r, d, (state, _) in zip(parsed, decisions, hashed, strict=True)
        ]

    def bodies_of(encoded: list[bytes]) -> list[bytes]:
        bodies, body, size = [], [], 2
        for piece in encoded:
            if body and size + 1 + len(piece) > DEFAULT_BATCH_BUDGET_BYTES:
                bodies.append(join_body(body))
                body, size = [], 2
            size += len(piece) + (1 if body else 0)
            body.append(piece)
        bodies.append(join_body(body))
        return bodies

    def intents(decisions: list[Any], rows: list[Any], batches: int) -> list[Any]:
        batch = -(-len(rows) // batches)
        return [
            intent_for(decisions[first : first + batch], rows[first : first + batch], STARTED)
            for first in range(0, len(rows), batch)
        ]

    for page in pages:
        records = timed("parse the Graph pages (json.loads)", True, json.loads, page)["value"]
        count += len(records)
        parsed = timed("validate and type each record", False, list, map(parse_trace_record, records))
        hashed = timed("hash the row identity (ledger key)", False, hashes, parsed)
        timed("one observation per key (precedence)", False, precedence, parsed, hashed)
        decisions = timed("ledger decision", False, decide, parsed, hashed)
        rows = timed("map to the table row (with RowId)", False, to_rows, parsed, decisions, hashed)
        encoded = timed("serialise the rows (encode_row)", True, list, map(encode_row, rows))
        bodies = timed("batch and join the request bodies", True, bodies_of, encoded)
        timed("gzip the request bodies", True, list, map(gzip_body, bodies))
        timed("intent records (before each upload)", False, intents, decisions, rows, len(bodies))
        timed("commit to the ledger", False, ledger.commit, decisions)
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    return [(label, seconds / count * 1e6, floor) for (label, floor), seconds in spent.items()]


class _Observed(NamedTuple):
    key: str
    received: datetime
    status: str


STARTED = datetime(2026, 1, 1, tzinfo=UTC)


def import_seconds(runs: int) -> list[float]:
    """``import function_app`` in fresh interpreters (the function host's cold start of our code)."""
    probe = "import time; t = time.perf_counter(); import function_app; print(time.perf_counter() - t)"
    times = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
        )
        times.append(float(done.stdout.strip().splitlines()[-1]))
    return times


def breakdown(profile: Path, total: float) -> dict[str, float]:
    stats = pstats.Stats(str(profile)).stats  # type: ignore[attr-defined]
    shares: dict[str, float] = {}
    for label, suffix, name in _PARTS:
        seconds = sum(
            entry[3]
            for (path, _, function), entry in stats.items()
            if path.endswith(suffix) and function == name
        )
        shares[label] = seconds / total if total else 0.0
    return shares


def main() -> int:
    parser = argparse.ArgumentParser(description="CPU vs floor, upload size and import time")
    parser.add_argument("--messages", type=int, default=105_000, help="messages to generate (records ~1.9x)")
    parser.add_argument("--hours", type=float, default=96.0, help="span of the generated traffic")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--imports", type=int, default=7, help="fresh interpreters for (f)")
    parser.add_argument("--no-profile", action="store_true", help="skip the profiled second run")
    args = parser.parse_args()

    imports = import_seconds(args.imports)
    azurite = start_azurite(Path(tempfile.mkdtemp(prefix="connector-bench-")))
    try:
        with Simulator(graph_quota=(1_000_000, 300.0)) as sim:
            now = sim.now()
            generated = generate_traffic(
                now - timedelta(hours=args.hours), now - timedelta(minutes=5), args.messages, seed=args.seed
            )
            sim.graph.add(generated)
            cpu, wall, _ = catch_up(sim, azurite.connection_string, args.hours, profile=None)
            stored = sim.ingestion.rows()
            batches = sim.ingestion.batches()
            graph_requests = len(sim.graph.requests(path="messageTraces"))
            floor = floor_seconds(sim.graph.rows(), stored)
            steps = per_row_steps(sim.graph.rows())
            shares: dict[str, float] = {}
            if not args.no_profile:
                sim.ingestion.reset()
                profile = Path(tempfile.mkdtemp(prefix="connector-prof-")) / "run.prof"
                profiled_cpu, _, _ = catch_up(sim, azurite.connection_string, args.hours, profile=profile)
                shares = breakdown(profile, pstats.Stats(str(profile)).total_tt)  # type: ignore[attr-defined]
    finally:
        azurite.stop()

    records = len(stored)
    rate = records / cpu
    floor_rate = records / floor
    ratio = rate / floor_rate
    fill = statistics.fmean(batch.uncompressed_bytes for batch in batches) / ONE_MB
    print(
        f"records generated and stored: {len(generated)} / {records}; Graph requests {graph_requests}; "
        f"uploads {len(batches)}; wall {wall:.1f} s"
    )
    line("(b) records per connector CPU-second", f"{rate:,.0f} ({cpu:.2f} s user+sys)")
    startup = startup_cpu()
    line(
        "    without interpreter start and imports",
        f"{records / (cpu - startup):,.0f} ({startup:.2f} s start)",
    )
    line("    floor (parse pages + rows JSON + gzip)", f"{floor_rate:,.0f} ({floor:.2f} s)")
    line("    ratio to the floor", f"{ratio:.0%}", f"target >= {TARGET_FLOOR_RATIO:.0%}")
    if shares:
        checkpoint = shares["checkpoint encoding"]
        line("    share of CPU in checkpoint encoding", f"{checkpoint:.0%}", "(lead's journal replaces it)")
        line(
            "    ratio without checkpoint encoding",
            f"{rate / (1 - checkpoint) / floor_rate:.0%}",
            f"target >= {TARGET_FLOOR_RATIO:.0%}",
        )
    line(
        "(d) mean upload size / 1 MB",
        f"{fill:.1%} ({statistics.fmean(b.body_bytes for b in batches) / 1000:.0f} kB gzip)",
        f"target >= {TARGET_UPLOAD_FILL:.0%}",
    )
    line(
        "(f) import function_app (median)",
        f"{statistics.median(imports):.2f} s (of {len(imports)}: {min(imports):.2f}-{max(imports):.2f})",
        f"target <= {TARGET_IMPORT_SECONDS} s",
    )
    if shares:
        print(f"profile of the connector process (cProfile on its CPU clock, {profiled_cpu:.2f} s user+sys):")
        for label, share in shares.items():
            print(f"    {label:<40} {share:6.1%}")
    floor_steps = sum(us for _, us, floor in steps if floor)
    core_steps = sum(us for _, us, floor in steps if not floor)
    print("per row, in one process (the floor's steps, then the pure core's own; no HTTP, SDK or storage):")
    for label, us, floor in steps:
        print(f"    {'floor' if floor else 'core ':<6} {label:<40} {us:6.2f} us")
    rest = (cpu - startup) / records * 1e6 - floor_steps - core_steps
    print(
        f"    floor {floor_steps:.1f} us + core {core_steps:.1f} us per row; the whole run spent "
        f"{cpu / records * 1e6:.1f} us ({(cpu - startup) / records * 1e6:.1f} us without start and imports), "
        f"so the rest (HTTP, SDKs, storage, threads, the loop) took about {rest:.1f} us"
    )
    print(
        f"    the target (50 % of the floor) allows {floor_steps:.1f} us per row beyond the floor: "
        f"the pure core alone needs {core_steps:.1f} us"
    )
    return 0 if records == len(generated) else 1


if __name__ == "__main__":
    sys.exit(main())
