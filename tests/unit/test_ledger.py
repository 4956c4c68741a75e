from datetime import UTC, datetime

from connector.ledger import DedupLedger, LedgerEntry, epoch_ms, ledger_key

T0 = datetime(2026, 3, 10, 10, 0, tzinfo=UTC)
T1 = datetime(2026, 3, 10, 11, 0, tzinfo=UTC)


class TestLedgerKey:
    def test_recipient_case_does_not_change_the_key(self):
        assert ledger_key("id-1", "Bob@Contoso.COM") == ledger_key("id-1", "bob@contoso.com")

    def test_each_recipient_of_one_trace_id_has_its_own_key(self):
        assert ledger_key("id-1", "bob@contoso.com") != ledger_key("id-1", "carol@contoso.com")

    def test_key_holds_no_address(self):
        assert "contoso" not in ledger_key("id-1", "bob@contoso.com")


class TestDecide:
    def test_new_key_is_stored_as_revision_zero(self):
        ledger = DedupLedger()

        decision = ledger.decide("k", T0, "Delivered")

        assert decision is not None
        assert decision.entry == LedgerEntry(epoch_ms(T0), "Delivered", 0)
        assert decision.previous_status is None

    def test_committed_key_with_same_status_is_a_duplicate(self):
        ledger = DedupLedger({"k": LedgerEntry(epoch_ms(T0), "Delivered", 0)})

        assert ledger.decide("k", T0, "Delivered") is None

    def test_committed_key_with_new_status_is_the_next_revision(self):
        ledger = DedupLedger({"k": LedgerEntry(epoch_ms(T0), "Pending", 0)})

        decision = ledger.decide("k", T0, "Delivered")

        assert decision is not None
        assert decision.entry.revision == 1
        assert decision.previous_status == "Pending"

    def test_key_seen_twice_before_commit_is_a_duplicate(self):
        ledger = DedupLedger()
        ledger.decide("k", T0, "Delivered")

        assert ledger.decide("k", T0, "Delivered") is None

    def test_discarded_decisions_are_decided_again(self):
        ledger = DedupLedger()
        ledger.decide("k", T0, "Delivered")
        ledger.discard_staged()

        assert ledger.decide("k", T0, "Delivered") is not None
        assert len(ledger) == 0


class TestCommitAndPrune:
    def test_commit_moves_staged_entries_to_committed(self):
        ledger = DedupLedger()
        decision = ledger.decide("k", T0, "Delivered")
        assert decision is not None

        ledger.commit([decision])

        assert ledger.entries() == {"k": LedgerEntry(epoch_ms(T0), "Delivered", 0)}
        assert ledger.staged_count == 0

    def test_older_revision_committed_late_does_not_overwrite_newer(self):
        ledger = DedupLedger()
        first = ledger.decide("k", T0, "Pending")
        second = ledger.decide("k", T0, "Delivered")
        assert first is not None
        assert second is not None

        ledger.commit([second])
        ledger.commit([first])

        assert ledger.entries()["k"].status == "Delivered"

    def test_prune_drops_entries_received_before_the_cutoff_only(self):
        ledger = DedupLedger(
            {
                "old": LedgerEntry(epoch_ms(T0), "Delivered", 0),
                "new": LedgerEntry(epoch_ms(T1), "Delivered", 0),
            }
        )

        removed = ledger.prune(T1)

        assert removed == 1
        assert set(ledger.entries()) == {"new"}


def test_entries_that_do_not_pack_into_an_int_read_back_exactly_beside_packed_ones():
    # A revision past 65,535, a time before 1970 and a 257th status are kept as LedgerEntry objects.
    odd = {
        "big-revision": LedgerEntry(received_ms=1_700_000_000_000, status="Delivered", revision=70_000),
        "before-1970": LedgerEntry(received_ms=-5, status="Pending", revision=1),
    }
    many = {f"k{n}": LedgerEntry(received_ms=n, status=f"Status{n}", revision=n % 3) for n in range(300)}
    entries = {**odd, **many}
    ledger = DedupLedger(entries)
    assert dict(ledger.committed.items()) == entries
    assert all(ledger.committed[key] == entry for key, entry in entries.items())
    assert ledger.committed.get("missing") is None
    assert ledger.decide("big-revision", datetime(2026, 1, 1, tzinfo=UTC), "Failed").entry.revision == 70_001
