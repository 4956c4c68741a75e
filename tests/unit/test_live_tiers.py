"""The tiered live lookback: which part of the overlap each run reads, and the old-checkpoint case."""

from datetime import UTC, datetime, timedelta

import pytest

from connector.checkpoint import decode_checkpoint, encode_checkpoint
from connector.errors import ConfigError
from connector.settings import Settings
from connector.state import Checkpoint, FeedProgress
from connector.windows import (
    DeepPass,
    Window,
    deep_chunk,
    deep_floor,
    plan_deep_pass,
    plan_live_window,
    retention_floor,
)
from tests.unit.test_settings import BASE

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
OVER, L, S, F = 60 * MINUTE, 10 * MINUTE, 2 * MINUTE, 60 * MINUTE


def new_pass(
    current: DeepPass | None, mark: datetime | None, coverage: datetime | None = None
) -> DeepPass | None:
    return plan_deep_pass(
        current=current,
        high_water_mark=mark,
        overlap_lookback=OVER,
        short_lookback=L,
        now=NOW,
        coverage_start=coverage,
    )


def chunk(deep: DeepPass, mark: datetime) -> Window | None:
    return deep_chunk(deep, high_water_mark=mark, overlap_lookback=OVER, short_lookback=L, full_reread=F)


def test_a_checkpoint_without_a_pass_starts_a_full_re_read_of_the_overlap():
    mark = NOW - 7 * MINUTE

    assert new_pass(None, mark) == DeepPass(cursor=mark - OVER, end=mark - L)


def test_a_first_run_and_untiered_settings_have_no_deep_re_read():
    assert new_pass(None, None) is None
    untiered = plan_deep_pass(
        current=None, high_water_mark=NOW, overlap_lookback=OVER, short_lookback=OVER, now=NOW
    )
    assert untiered is None


def test_an_unfinished_pass_goes_on_and_a_finished_one_is_followed_from_its_end_minus_the_overlap():
    going = DeepPass(cursor=NOW - 90 * MINUTE, end=NOW - 20 * MINUTE)
    finished = DeepPass(cursor=NOW - 80 * MINUTE, end=NOW - 80 * MINUTE)
    mark = NOW - 7 * MINUTE

    assert new_pass(going, mark) == going
    assert new_pass(finished, mark) == DeepPass(cursor=NOW - 140 * MINUTE, end=mark - L)


def test_a_pass_never_starts_before_the_coverage_start():
    mark = NOW - 7 * MINUTE
    coverage = NOW - 30 * MINUTE

    deep = new_pass(None, mark, coverage)

    assert deep is not None
    assert deep.cursor == coverage


def test_a_pass_left_behind_the_retention_floor_skips_what_graph_no_longer_keeps():
    old = DeepPass(cursor=NOW - timedelta(days=100), end=NOW - timedelta(days=95))

    deep = new_pass(old, NOW - 7 * MINUTE)

    assert deep == DeepPass(cursor=retention_floor(NOW), end=NOW - 17 * MINUTE)


def test_the_main_window_reads_only_the_short_lookback_before_the_high_water_mark():
    mark = NOW - 7 * MINUTE

    plan = plan_live_window(
        high_water_mark=mark, now=NOW, overlap_lookback=L, settle_delay=S, initial_lookback=24 * OVER
    )

    assert plan.window == Window(mark - L, NOW - S)


def test_a_new_pass_reads_nothing_until_the_feed_moves_then_about_two_minutes_per_minute_of_progress():
    start_mark = NOW - 7 * MINUTE
    deep = DeepPass(cursor=start_mark - L - F - OVER, end=start_mark - L)  # a pass after a full hour

    assert chunk(deep, start_mark) is None
    first = chunk(deep, start_mark + 5 * MINUTE)
    assert first == Window(deep.cursor, deep.cursor + 10 * MINUTE)


def test_a_pass_is_due_in_full_once_the_feed_moved_the_full_re_read_interval():
    start_mark = NOW - 7 * MINUTE
    deep = DeepPass(cursor=start_mark - 100 * MINUTE, end=start_mark - L)

    assert chunk(deep, start_mark + F) == Window(deep.cursor, deep.end)
    assert chunk(deep, start_mark + 3 * F) == Window(deep.cursor, deep.end)


def test_a_chunk_shorter_than_five_minutes_waits_unless_it_ends_the_pass():
    start_mark = NOW - 7 * MINUTE
    deep = DeepPass(cursor=start_mark - L - F - OVER, end=start_mark - L)

    assert chunk(deep, start_mark + MINUTE) is None
    tail = DeepPass(cursor=deep.end - MINUTE, end=deep.end)
    assert chunk(tail, start_mark + F) == Window(tail.cursor, tail.end)
    assert chunk(DeepPass(cursor=deep.end, end=deep.end), start_mark + F) is None


def test_the_ledger_keeps_what_the_pass_and_the_next_one_will_read():
    deep = DeepPass(cursor=NOW - 100 * MINUTE, end=NOW - 17 * MINUTE)

    assert deep_floor(deep, overlap_lookback=OVER) == NOW - 100 * MINUTE
    later = DeepPass(cursor=NOW - 30 * MINUTE, end=NOW - 17 * MINUTE)
    assert deep_floor(later, overlap_lookback=OVER) == NOW - 77 * MINUTE
    assert deep_floor(None, overlap_lookback=OVER) is None


@pytest.mark.parametrize("eager", [False, True], ids=["paced", "each-pass-read-at-once"])
def test_every_record_visible_within_the_overlap_is_read_after_it_became_visible(eager):
    """The docstring's argument, checked on a grid: runs every 5 minutes, any receive time and delay.

    ``eager`` reads each pass whole in the run that creates it (as a feed catching up
    does): the guarantee must not rest on the pacing.
    """
    tick = 5 * MINUTE
    runs: list[tuple[datetime, Window]] = []  # (when read, what)
    mark: datetime | None = None
    deep: DeepPass | None = None
    start = NOW - 6 * OVER
    for step in range(80):
        now = start + step * tick
        deep = plan_deep_pass(
            current=deep, high_water_mark=mark, overlap_lookback=OVER, short_lookback=L, now=now
        )
        plan = plan_live_window(
            high_water_mark=mark, now=now, overlap_lookback=L, settle_delay=S, initial_lookback=2 * OVER
        )
        assert plan.window is not None
        runs.append((now, plan.window))
        mark = plan.window.end
        if deep is not None:
            piece = chunk(deep, mark) if not eager else None if deep.done else Window(deep.cursor, deep.end)
            if piece is not None:
                runs.append((now, piece))
                deep = DeepPass(cursor=piece.end, end=deep.end)
    for received_step in range(0, 60 * 40, 7):  # every 7 minutes of receive times, well inside the runs
        received = start + 2 * OVER + received_step * 0.25 * MINUTE
        for delay_minutes in (0, 1, 5, 9, 12, 13, 30, 59, 60):
            visible = received + delay_minutes * MINUTE
            if visible > runs[-1][0] - 2 * F:
                continue
            assert any(when >= visible and window.contains(received) for when, window in runs), (
                received,
                delay_minutes,
            )


def test_a_checkpoint_keeps_the_pass_and_an_older_document_reads_as_a_new_pass_due():
    deep = DeepPass(cursor=NOW - 100 * MINUTE, end=NOW - 17 * MINUTE)
    with_pass = Checkpoint(
        progress=FeedProgress(feed="live", high_water_mark=NOW, deep_reread=deep), ledger={}
    )
    old = (
        b'{"format_version":1,"feed":"live","high_water_mark":"2026-03-10T12:00:00.000000Z",'
        b'"coverage_start":null,"range":null,"slice_span_seconds":3600,"ledger":{},"last_run":null,'
        b'"updated":null,"possible_duplicates_total":0,"pending_batch":null}'
    )

    assert decode_checkpoint(encode_checkpoint(with_pass), where="t") == with_pass
    assert b'"deep_reread":{"cursor":"2026-03-10T10:20:00.000000Z"' in encode_checkpoint(with_pass)
    assert decode_checkpoint(old, where="old").progress.deep_reread is None
    assert encode_checkpoint(decode_checkpoint(old, where="old")) == old


def test_short_lookback_defaults_to_ten_minutes_or_the_overlap_when_shorter():
    assert Settings.from_env(BASE).short_lookback == 10 * MINUTE
    assert Settings.from_env({**BASE, "OVERLAP_LOOKBACK_MINUTES": "5"}).short_lookback == 5 * MINUTE
    assert Settings.from_env(BASE).full_reread == 60 * MINUTE


def test_a_short_lookback_longer_than_the_overlap_is_refused_in_one_line():
    with pytest.raises(
        ConfigError, match="setting SHORT_LOOKBACK_MINUTES: .*at most OVERLAP_LOOKBACK_MINUTES"
    ) as err:
        Settings.from_env({**BASE, "SHORT_LOOKBACK_MINUTES": "90"})
    assert "\n" not in str(err.value).strip()


def test_a_full_re_read_interval_under_five_minutes_is_refused():
    with pytest.raises(ConfigError, match="setting FULL_REREAD_MINUTES"):
        Settings.from_env({**BASE, "FULL_REREAD_MINUTES": "1"})
