"""SUBJECT_MODE keep / hash / drop: the setting, the row, the dead letter, the key."""

import base64
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from connector.errors import ConfigError
from connector.mapping import MAX_FIELD_BYTES, RowMapper, parse_trace_record
from connector.settings import Settings
from connector.subjects import HASH_PREFIX, SubjectMode, SubjectPolicy, parse_hash_key
from tests.fakes.memory import FakeClock, MemorySink, MemorySource, MemoryStore, trace
from tests.unit.test_settings import BASE
from tests.unit.test_sync import iso, make_sync

KEY = base64.b64encode(bytes(range(32))).decode()
OTHER_KEY = base64.b64encode(bytes(range(1, 33))).decode()
NOW = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)
HASHED = SubjectPolicy(SubjectMode.HASH, parse_hash_key(KEY))
DROPPED = SubjectPolicy(SubjectMode.DROP)


def settings(**env: str) -> Settings:
    return Settings.from_env({**BASE, **env})


class TestSetting:
    def test_default_is_keep(self):
        assert settings().subjects.mode is SubjectMode.KEEP

    @pytest.mark.parametrize("raw", ["drop", "DROP", " Drop "])
    def test_mode_is_read_in_any_case(self, raw):
        assert settings(SUBJECT_MODE=raw).subjects.mode is SubjectMode.DROP

    def test_unknown_mode_is_refused_naming_the_allowed_values(self):
        with pytest.raises(ConfigError) as caught:
            settings(SUBJECT_MODE="redact")
        ((name, text),) = caught.value.problems
        assert name == "SUBJECT_MODE"
        assert "keep, hash, drop" in text

    def test_hash_mode_without_a_key_is_refused(self):
        with pytest.raises(ConfigError) as caught:
            settings(SUBJECT_MODE="hash")
        ((name, text),) = caught.value.problems
        assert name == "SUBJECT_HASH_KEY"
        assert "openssl rand -base64 32" in text

    @pytest.mark.parametrize(
        "key",
        [
            base64.b64encode(b"s3cret-but-short-31-bytes-long!").decode(),
            "correct horse battery staple and more words here!",
        ],
    )
    def test_a_short_or_non_base64_key_is_refused_without_quoting_it(self, key):
        with pytest.raises(ConfigError) as caught:
            settings(SUBJECT_MODE="hash", SUBJECT_HASH_KEY=key)
        assert key not in str(caught.value)
        assert "at least 32 random bytes" in str(caught.value)

    def test_an_unresolved_key_vault_reference_says_what_to_check(self):
        reference = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/subject-hash-key/)"
        with pytest.raises(ConfigError) as caught:
            settings(SUBJECT_MODE="hash", SUBJECT_HASH_KEY=reference)
        assert "Key Vault Secrets User" in str(caught.value)

    def test_the_key_never_shows_in_the_settings_repr(self):
        loaded = settings(SUBJECT_MODE="hash", SUBJECT_HASH_KEY=KEY)
        assert loaded.subjects.key == bytes(range(32))
        for text in (repr(loaded), str(loaded), repr(loaded.subjects)):
            assert KEY not in text
            assert repr(bytes(range(32))) not in text

    def test_url_safe_base64_is_the_same_key(self):
        key = bytes([0xFB, 0xFF] * 16)
        standard, url_safe = base64.b64encode(key).decode(), base64.urlsafe_b64encode(key).decode()
        assert standard != url_safe
        assert parse_hash_key(standard) == parse_hash_key(url_safe.rstrip("=")) == key

    def test_a_key_outside_hash_mode_is_only_a_warning(self, caplog):
        with caplog.at_level(logging.WARNING):
            loaded = settings(SUBJECT_MODE="drop", SUBJECT_HASH_KEY=KEY)
        assert loaded.subjects.mode is SubjectMode.DROP
        assert "SUBJECT_HASH_KEY is set but SUBJECT_MODE is drop" in caplog.text
        assert KEY not in caplog.text


class TestTransform:
    def test_hash_is_prefixed_fixed_length_and_equal_for_equal_subjects(self):
        first, second = HASHED.apply("Invoice 42"), HASHED.apply("Invoice 42")
        assert first == second
        assert first is not None
        assert first.startswith(HASH_PREFIX)
        assert len(first) == len(HASH_PREFIX) + 32
        assert HASHED.apply("Invoice 43") != first

    def test_different_keys_give_different_hashes(self):
        other = SubjectPolicy(SubjectMode.HASH, parse_hash_key(OTHER_KEY))
        assert other.apply("Invoice 42") != HASHED.apply("Invoice 42")

    def test_empty_and_missing_subjects_stay_empty_and_missing(self):
        assert HASHED.apply("") == ""
        assert HASHED.apply(None) is None
        assert DROPPED.apply(None) is None
        assert DROPPED.apply("Invoice 42") == ""

    def test_hash_mode_needs_a_long_enough_key(self):
        with pytest.raises(ValueError, match="32 bytes"):
            SubjectPolicy(SubjectMode.HASH, b"short")


def _row(policy, subject):
    raw = trace("id-1", "bob@contoso.com", "2026-03-10T11:00:00Z", subject=subject)
    return RowMapper(("contoso.com",), subjects=policy).to_row(
        parse_trace_record(raw), revision=0, previous_status=None
    )


class TestRow:
    def test_a_huge_subject_is_hashed_whole_and_never_counted_as_truncated(self):
        huge = "A" * 200_000
        almost = "A" * (MAX_FIELD_BYTES + 10) + "B"
        row = _row(HASHED, huge)
        assert row["Subject"] == HASHED.apply(huge)
        assert row["Subject"] != _row(HASHED, almost)["Subject"], "hash taken before the 64 KB cut"
        assert row["TruncatedFields"] == ""
        assert _row(None, huge)["TruncatedFields"] == "Subject"

    def test_a_dropped_subject_is_an_empty_column_not_a_truncation(self):
        row = _row(DROPPED, "Merger terms")
        assert row["Subject"] == ""
        assert row["TruncatedFields"] == ""

    def test_a_lone_surrogate_is_hashed_as_its_replacement_character(self):
        assert _row(HASHED, "Hi \ud83d")["Subject"] == HASHED.apply("Hi \ufffd")

    @pytest.mark.parametrize("policy", [None, HASHED, DROPPED])
    def test_row_id_and_every_other_column_are_the_same_in_every_mode(self, policy):
        kept, other = _row(None, "Merger terms"), _row(policy, "Merger terms")
        assert {k: v for k, v in other.items() if k != "Subject"} == {
            k: v for k, v in kept.items() if k != "Subject"
        }


class TestDeadLetter:
    def run(self, policy, records):
        source, sink, store, clock = MemorySource(), MemorySink(), MemoryStore(), FakeClock(NOW)
        source.records = records
        report = make_sync(source, sink, store, clock, subjects=policy).run_live()
        assert report.ok, report.error
        return sink, store

    def bad_records(self, subject):
        when = iso(NOW - timedelta(minutes=10))
        bad_date = trace("id-date", "bob@contoso.com", when, subject=subject)
        bad_date["receivedDateTime"] = "not-a-date"
        bad_type = trace("id-type", "bob@contoso.com", when)
        bad_type["subject"] = {"text": subject}
        return [bad_date, bad_type]

    @pytest.mark.parametrize("policy", [HASHED, DROPPED])
    def test_a_dead_letter_keeps_no_subject_text(self, policy):
        subject = "Quarterly layoffs list"
        _, store = self.run(policy, self.bad_records(subject))
        letters = list(store.dead_letters.values())
        assert len(letters) == 2
        for letter in letters:
            assert subject not in json.dumps(letter.record) + letter.reason
            assert subject not in letter.encode().decode("ascii")
            assert subject not in letter.name
        date_letter = next(letter for letter in letters if letter.record["id"] == "id-date")
        assert date_letter.record["subject"] == policy.apply(subject)

    def test_keep_mode_dead_letters_the_record_as_graph_sent_it(self):
        records = self.bad_records("Quarterly layoffs list")
        _, store = self.run(SubjectPolicy(), [dict(record) for record in records])
        assert sorted(json.dumps(letter.record) for letter in store.dead_letters.values()) == sorted(
            json.dumps(record) for record in records
        )

    def test_a_dead_letter_and_the_row_of_one_subject_carry_the_same_hash(self):
        subject = "Wire transfer \ud83d today"
        when = iso(NOW - timedelta(minutes=10))
        bad = trace("id-bad", "bob@contoso.com", when, subject=subject)
        bad["size"] = "large"
        sink, store = self.run(HASHED, [bad, trace("id-good", "bob@contoso.com", when, subject=subject)])
        ((letter,),) = [list(store.dead_letters.values())]
        assert letter.record["subject"] == sink.rows[0]["Subject"] == HASHED.apply(subject)
