"""``purge-dead-letters --older-than``: whole days or hours, refused with exit 2 otherwise. Pure and CLI."""

from datetime import timedelta

import pytest

from connector.deadletter import parse_age


@pytest.mark.parametrize(
    ("text", "age"), [("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), ("1d", timedelta(days=1))]
)
def test_age_in_days_or_hours_is_read(text, age):
    assert parse_age(text) == age


@pytest.mark.parametrize(
    "text",
    ["", "30", "d", "0d", "0h", "-1d", "1.5d", "30m", "30D", "30 d", "1000000d", "\uff13\uff10d", "30d;rm"],
)
def test_anything_else_is_not_an_age_and_says_what_is(text):
    with pytest.raises(ValueError, match=r"is not an age: give whole days or hours, like 30d or 12h"):
        parse_age(text)


def test_purge_with_a_bad_age_exits_2_before_reading_settings(capsys, monkeypatch):
    from connector.cli import main

    monkeypatch.delenv("CHECKPOINT_STORE", raising=False)
    monkeypatch.delenv("STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(SystemExit) as caught:
        main(["purge-dead-letters", "--older-than", "6m"])

    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "'6m' is not an age" in err
    assert "setting" not in err


def test_runner_refuses_an_age_that_is_not_positive_before_reading_settings():
    from connector.errors import ArgumentError
    from connector.runner import purge_dead_letters

    with pytest.raises(ArgumentError, match="--older-than: must be more than 0"):
        purge_dead_letters(timedelta(0), env={})
