"""Status precedence within one read of a slice: one observation per key, order-independent."""

from datetime import UTC, datetime, timedelta

import pytest

from connector.precedence import Observation, SliceObservations, status_precedence, supersedes

T = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("earlier", "later"),
    [
        ("GettingStatus", "Expanded"),
        ("Pending", "Expanded"),
        ("Pending", "Delivered"),
        ("Expanded", "Delivered"),
        ("Expanded", "Quarantined"),
        ("GettingStatus", "FilteredAsSpam"),
        ("Pending", "SomethingGraphAddsLater"),
    ],
)
def test_a_more_advanced_status_supersedes_an_earlier_one_and_not_the_reverse(earlier, later):
    assert supersedes(later, earlier)
    assert not supersedes(earlier, later)


def test_getting_status_and_pending_are_equally_early():
    assert status_precedence("GettingStatus") == status_precedence("Pending") < status_precedence("Expanded")


def test_between_two_final_statuses_the_first_name_wins_whatever_the_order():
    assert supersedes("Delivered", "Failed")
    assert not supersedes("Failed", "Delivered")


def test_a_status_does_not_supersede_itself():
    assert not supersedes("Delivered", "Delivered")


def chosen(observations):
    return sorted((seen.key, seen.status, seen.item) for seen in observations.release_all())


@pytest.mark.parametrize("order", [("Pending", "Delivered"), ("Delivered", "Pending")])
def test_a_key_seen_twice_in_one_read_keeps_its_most_advanced_status_in_either_order(order):
    observations = SliceObservations[Observation[str]]()
    for number, status in enumerate(order):
        observations.hold(Observation("k", T, status, f"record-{number}"))

    assert [(key, status) for key, status, _ in chosen(observations)] == [("k", "Delivered")]
    assert observations.superseded == 1


def test_an_exact_repeat_keeps_the_first_observation():
    observations = SliceObservations[Observation[str]]()
    observations.hold(Observation("k", T, "Delivered", "first"))
    observations.hold(Observation("k", T, "Delivered", "second"))

    assert chosen(observations) == [("k", "Delivered", "first")]


def test_keys_newer_than_the_oldest_record_read_are_released_and_the_rest_held():
    observations = SliceObservations[Observation[str]]()
    observations.hold(Observation("new", T, "Pending", "a"))
    observations.hold(Observation("edge", T - timedelta(seconds=1), "Pending", "b"))

    released = [seen.key for seen in observations.release_newer_than(T - timedelta(seconds=1))]

    assert released == ["new"]
    assert len(observations) == 1
    assert [seen.key for seen in observations.release_all()] == ["edge"]
    assert len(observations) == 0
