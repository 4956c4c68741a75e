"""Backfill range rules that need no store: the request itself, and where a re-run resumes."""

from datetime import UTC, datetime, timedelta

import pytest

from connector.backfill import BackfillRange, resume_window
from connector.errors import BackfillError
from connector.windows import Window

T0 = datetime(2026, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)


@pytest.mark.parametrize("end", [T0, T0 - DAY])
def test_empty_or_reversed_range_is_refused_before_anything_runs(end):
    with pytest.raises(BackfillError, match="must be after its start") as raised:
        BackfillRange(T0, end)

    assert raised.value.exit_code == 2


def test_range_names_its_own_progress_document():
    assert BackfillRange(T0, T0 + DAY).feed == "backfill/20260301T000000Z_20260302T000000Z"


@pytest.mark.parametrize(
    ("high_water_mark", "expected"),
    [
        (None, Window(T0, T0 + DAY)),
        (T0 - DAY, Window(T0, T0 + DAY)),
        (T0 + DAY / 2, Window(T0 + DAY / 2, T0 + DAY)),
        (T0 + DAY, None),
        (T0 + 2 * DAY, None),
    ],
)
def test_rerun_resumes_after_its_own_high_water_mark(high_water_mark, expected):
    assert resume_window(Window(T0, T0 + DAY), high_water_mark) == expected


def test_nothing_planned_stays_nothing():
    assert resume_window(None, T0) is None
