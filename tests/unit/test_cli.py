"""CLI pieces that need no service."""

import pytest


def test_cli_progress_bar_follows_the_covered_part_of_the_window(capsys):
    from datetime import UTC, datetime, timedelta

    from connector.cli import _progress_bar
    from connector.windows import Window

    start = datetime(2026, 1, 1, tzinfo=UTC)
    with _progress_bar(True, "backfill") as update:
        assert update is not None
        update(Window(start, start + timedelta(hours=10)), start + timedelta(hours=5), 1200)

    err = capsys.readouterr().err
    assert "50%" in err
    assert "5.0/10.0 h, 1,200 rows" in err
    assert "rows/s, ETA " in err


def test_cli_progress_bar_shows_nothing_until_the_window_is_known(capsys):
    from connector.cli import _progress_bar

    with _progress_bar(True, "live") as update:
        assert update is not None

    assert "0.0/0.0" not in capsys.readouterr().err


@pytest.mark.parametrize("feed", ["../../x", "live/../x", ""])
def test_unlock_refuses_a_feed_that_is_not_live_or_a_backfill_before_reading_settings(
    feed, capsys, monkeypatch
):
    from connector.cli import main

    monkeypatch.delenv("CHECKPOINT_STORE", raising=False)
    monkeypatch.delenv("STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(SystemExit) as caught:
        main(["unlock", "--feed", feed])

    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "is not a feed: give live, backfill/" in err
    assert "setting" not in err


def test_runner_unlock_refuses_a_bad_feed_as_an_argument_error_before_settings():
    from connector.errors import ArgumentError, ErrorKind
    from connector.runner import unlock

    with pytest.raises(ArgumentError, match=r"^--feed: 'live/\.\./x' is not a feed") as caught:
        unlock("live/../x", env={})

    assert caught.value.kind is ErrorKind.SETTING
