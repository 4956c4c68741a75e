"""CLI pieces that need no service."""


def test_cli_progress_bar_follows_the_covered_part_of_the_window(capsys):
    from datetime import UTC, datetime, timedelta

    from connector.cli import _progress_bar
    from connector.windows import Window

    start = datetime(2026, 1, 1, tzinfo=UTC)
    with _progress_bar(True, "backfill") as update:
        assert update is not None
        update(Window(start, start + timedelta(hours=10)), start + timedelta(hours=5))

    assert "50%" in capsys.readouterr().err
