from datetime import UTC, datetime, timedelta

import pytest

from connector.windows import (
    MAX_GRAPH_WINDOW,
    MIN_SLICE,
    RETENTION,
    SliceReading,
    Window,
    adapt_slice_span,
    next_slice,
    plan_backfill_window,
    plan_live_window,
    split_slice_span,
)

NOW = datetime(2026, 3, 10, 12, 0, 30, 750_000, tzinfo=UTC)


def live(hwm, **overrides):
    args = {
        "high_water_mark": hwm,
        "now": NOW,
        "overlap_lookback": timedelta(minutes=60),
        "settle_delay": timedelta(minutes=2),
        "initial_lookback": timedelta(hours=24),
    }
    args.update(overrides)
    return plan_live_window(**args)


class TestPlanLiveWindow:
    def test_first_run_starts_initial_lookback_before_now_and_ends_settle_before_now(self):
        plan = live(None)

        assert plan.window == Window(
            datetime(2026, 3, 9, 12, 0, 30, tzinfo=UTC), datetime(2026, 3, 10, 11, 58, 30, tzinfo=UTC)
        )
        assert not plan.clamped

    def test_bounds_are_whole_seconds(self):
        plan = live(datetime(2026, 3, 10, 11, 0, 0, 123_456, tzinfo=UTC))

        assert plan.window is not None
        assert plan.window.start.microsecond == 0
        assert plan.window.end.microsecond == 0

    def test_later_run_rereads_the_overlap_lookback_before_the_high_water_mark(self):
        hwm = datetime(2026, 3, 10, 11, 55, tzinfo=UTC)

        plan = live(hwm)

        assert plan.window is not None
        assert plan.window.start == hwm - timedelta(minutes=60)

    def test_overlap_never_reaches_before_the_coverage_start(self):
        coverage = datetime(2026, 3, 10, 11, 30, tzinfo=UTC)
        hwm = datetime(2026, 3, 10, 11, 50, tzinfo=UTC)

        plan = live(hwm, coverage_start=coverage)

        assert plan.window is not None
        assert plan.window.start == coverage

    def test_interrupted_first_run_resumes_at_its_recorded_coverage_start(self):
        coverage = datetime(2026, 3, 8, 0, 0, tzinfo=UTC)

        plan = live(None, coverage_start=coverage)

        assert plan.window is not None
        assert plan.window.start == coverage

    def test_high_water_mark_older_than_retention_is_clamped_and_reports_lost_history(self):
        hwm = NOW - RETENTION - timedelta(days=3)

        plan = live(hwm)

        assert plan.clamped
        assert plan.window is not None
        assert plan.window.start == plan.retention_floor
        assert timedelta(days=3) < plan.unrecoverable < timedelta(days=3, hours=1)

    def test_only_the_overlap_beyond_retention_is_not_a_loss(self):
        hwm = NOW - RETENTION + timedelta(minutes=30)

        plan = live(hwm)

        assert plan.window is not None
        assert plan.window.start == plan.retention_floor
        assert not plan.clamped

    def test_no_window_when_the_settle_delay_has_not_passed(self):
        plan = live(NOW, overlap_lookback=timedelta(0))

        assert plan.window is None


class TestPlanBackfillWindow:
    def test_end_is_capped_to_now_minus_settle(self):
        plan = plan_backfill_window(
            start=NOW - timedelta(days=2),
            end=NOW + timedelta(days=1),
            now=NOW,
            settle_delay=timedelta(minutes=2),
        )

        assert plan.window is not None
        assert plan.window.end == (NOW - timedelta(minutes=2)).replace(microsecond=0)

    def test_start_older_than_retention_is_clamped_with_the_loss_reported(self):
        plan = plan_backfill_window(
            start=NOW - timedelta(days=100), end=NOW - timedelta(days=80), now=NOW, settle_delay=timedelta(0)
        )

        assert plan.clamped
        assert plan.window is not None
        assert plan.window.start == plan.retention_floor
        assert plan.unrecoverable > timedelta(days=9)

    def test_range_entirely_outside_retention_has_no_window(self):
        plan = plan_backfill_window(
            start=NOW - timedelta(days=120), end=NOW - timedelta(days=100), now=NOW, settle_delay=timedelta(0)
        )

        assert plan.window is None
        assert timedelta(days=20) <= plan.unrecoverable <= timedelta(days=20, seconds=1)


class TestSlices:
    def test_slice_never_exceeds_graphs_ten_day_window(self):
        start = datetime(2026, 1, 1, tzinfo=UTC)

        piece = next_slice(start, start + timedelta(days=30), timedelta(days=40))

        assert piece.span == MAX_GRAPH_WINDOW

    def test_slice_is_cut_at_the_window_end(self):
        start = datetime(2026, 1, 1, tzinfo=UTC)

        piece = next_slice(start, start + timedelta(minutes=7), timedelta(hours=1))

        assert piece.end == start + timedelta(minutes=7)

    @pytest.mark.parametrize(
        ("records", "expected"),
        [(0, timedelta(hours=2)), (48_750, timedelta(hours=1)), (200_000, timedelta(minutes=30))],
    )
    def test_span_doubles_when_sparse_and_halves_when_over_target(self, records, expected):
        assert (
            adapt_slice_span(timedelta(hours=1), records, target_records=50_000, maximum=timedelta(days=1))
            == expected
        )

    def test_span_stays_within_minimum_and_configured_maximum(self):
        assert adapt_slice_span(MIN_SLICE, 10**9, target_records=1000, maximum=timedelta(days=1)) == MIN_SLICE
        assert adapt_slice_span(
            timedelta(hours=20), 0, target_records=1000, maximum=timedelta(days=1)
        ) == timedelta(days=1)

    def test_window_rejects_naive_or_reversed_bounds(self):
        with pytest.raises(ValueError, match="timezone-aware"):
            Window(datetime(2026, 1, 1), datetime(2026, 1, 2))  # noqa: DTZ001
        with pytest.raises(ValueError, match="before its start"):
            Window(datetime(2026, 1, 2, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))


class TestSplittingAnUnfinishedSlice:
    HOUR = Window(datetime(2026, 3, 1, 10, tzinfo=UTC), datetime(2026, 3, 1, 11, tzinfo=UTC))

    def test_without_a_known_order_the_slice_is_halved(self):
        assert split_slice_span(self.HOUR, None) == timedelta(minutes=30)

    def test_newest_first_pages_size_the_split_from_the_part_read(self):
        covered_from = self.HOUR.end - timedelta(minutes=4)

        assert split_slice_span(self.HOUR, covered_from) == timedelta(minutes=2)

    def test_split_never_goes_below_one_second(self):
        one = Window(self.HOUR.start, self.HOUR.start + timedelta(seconds=1))

        assert split_slice_span(one, None) == timedelta(seconds=1)
        assert split_slice_span(self.HOUR, self.HOUR.end) == timedelta(seconds=1)

    def test_order_is_checked_on_every_record_and_one_break_drops_it(self):
        reading = SliceReading(self.HOUR)
        for minute in (50, 40, 40, 30):
            reading.observe(self.HOUR.start + timedelta(minutes=minute))
        assert reading.covered_from == self.HOUR.start + timedelta(minutes=30)

        reading.observe(self.HOUR.start + timedelta(minutes=45))

        assert reading.covered_from is None

    def test_a_split_span_grows_back_by_doubling_not_by_jumping_to_five_minutes(self):
        grown = adapt_slice_span(timedelta(seconds=20), 10, target_records=50_000, maximum=timedelta(days=1))

        assert grown == timedelta(seconds=40)

    @pytest.mark.parametrize(
        ("records", "expected"),
        [
            (24_375, timedelta(hours=2)),
            (39_000, timedelta(hours=1, minutes=15)),
            (65_000, timedelta(minutes=45)),
        ],
    )
    def test_span_scales_toward_whole_full_pages(self, records, expected):
        # Target 50,000 records = 10 pages; the aim is 9.75 pages (48,750): the last page nearly full.
        assert (
            adapt_slice_span(timedelta(hours=1), records, target_records=50_000, maximum=timedelta(days=1))
            == expected
        )

    def test_a_target_that_is_not_whole_pages_is_rounded_down_to_them(self):
        kwargs = {"maximum": timedelta(days=1)}

        # 52,000 aims at 10 pages (48,750), not at 52,000: a slice of 51,000 records shrinks.
        assert adapt_slice_span(timedelta(hours=1), 51_000, target_records=52_000, **kwargs) == timedelta(
            seconds=3600 * 48_750 // 51_000
        )

    def test_a_slice_of_7_full_pages_grows_to_the_10_page_aim_under_a_20_page_cap(self):
        # 7 pages of 5,000 is under the aim (9.75 pages): it grows, to at most half the cap.
        grown = adapt_slice_span(
            timedelta(hours=7),
            35_000,
            target_records=50_000,
            maximum=timedelta(days=1),
            pages_in_slice=7,
            page_cap=20,
        )

        assert grown == timedelta(hours=9, minutes=45)

    def test_ten_full_pages_short_of_the_aim_still_grow_to_it(self):
        # 45,893 records is 10 pages, 92 % full: growing to 48,750 keeps 10 pages, 97.5 % full.
        grown = adapt_slice_span(
            timedelta(hours=10),
            45_893,
            target_records=50_000,
            maximum=timedelta(days=1),
            pages_in_slice=10,
            page_cap=20,
        )

        assert grown == timedelta(seconds=36_000 * 48_750 // 45_893)

    def test_slice_over_half_the_page_cap_halves_and_one_near_it_never_doubles(self):
        kwargs = {"target_records": 50_000, "maximum": timedelta(days=1), "page_cap": 20}

        assert adapt_slice_span(timedelta(hours=1), 10, pages_in_slice=11, **kwargs) == timedelta(minutes=30)
        assert adapt_slice_span(timedelta(hours=1), 10, pages_in_slice=8, **kwargs) == timedelta(minutes=75)
        assert adapt_slice_span(timedelta(hours=1), 10, pages_in_slice=5, **kwargs) == timedelta(hours=2)
