"""``subject-hash``: an analyst holding the key finds a subject's rows in hash mode.

Why: in ``SUBJECT_MODE=hash`` the table holds ``hmac-sha256:…`` instead of subjects, so the
only way to look one up is to compute its value the way the connector did; a hand-written
one-liner drifts (URL-safe keys, lone surrogates). The command runs the connector's own
code and must print exactly what a row stores.
"""

from __future__ import annotations

import base64
import io

import pytest

from connector.cli import main
from connector.mapping import RowMapper, parse_trace_record
from connector.settings import Settings
from tests.fakes.memory import trace
from tests.unit.test_settings import BASE

KEY = base64.b64encode(bytes(range(100, 132))).decode()
SUBJECTS = ["Invoice overdue", "Re: Wire transfer \ud83d today", "  spaced  ", "Ünïcödé 請求書"]


def stored_subject(subject: str, key: str) -> object:
    """The Subject a hash-mode run stores for a record with this subject."""
    settings = Settings.from_env({**BASE, "SUBJECT_MODE": "hash", "SUBJECT_HASH_KEY": key})
    record = parse_trace_record(trace("id-1", "lee@contoso.com", "2026-11-24T10:00:00Z", subject=subject))
    return RowMapper(settings.local_domains, subjects=settings.subjects).to_row(
        record, revision=0, previous_status=None
    )["Subject"]


def run(monkeypatch, argv: list[str], key: str | None = KEY, stdin: str = "") -> tuple[int, str]:
    if key is None:
        monkeypatch.delenv("SUBJECT_HASH_KEY", raising=False)
    else:
        monkeypatch.setenv("SUBJECT_HASH_KEY", key)
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    out = io.StringIO()
    return main(argv, out=out), out.getvalue()


@pytest.mark.parametrize("subject", SUBJECTS)
def test_the_command_prints_exactly_what_a_hash_mode_row_stores(monkeypatch, subject):
    code, out = run(monkeypatch, ["subject-hash", subject])

    assert code == 0
    assert out == f"{stored_subject(subject, KEY)}\n"


def test_a_url_safe_spelling_of_the_key_gives_the_same_value(monkeypatch):
    url_safe = base64.urlsafe_b64encode(base64.b64decode(KEY)).decode().rstrip("=")

    assert run(monkeypatch, ["subject-hash", "Invoice overdue"], key=url_safe)[1] == (
        f"{stored_subject('Invoice overdue', KEY)}\n"
    )


def test_a_dash_reads_the_subject_from_standard_input_without_its_line_break(monkeypatch):
    code, out = run(monkeypatch, ["subject-hash", "-"], stdin="Invoice overdue\n")

    assert code == 0
    assert out == f"{stored_subject('Invoice overdue', KEY)}\n"


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (None, "setting SUBJECT_HASH_KEY: is required"),
        ("c2hvcnQ=", "setting SUBJECT_HASH_KEY: decodes to 5 bytes"),
    ],
)
def test_a_missing_or_short_key_exits_2_naming_the_setting_without_quoting_it(
    monkeypatch, capsys, key, message
):
    code, out = run(monkeypatch, ["subject-hash", "Invoice overdue"], key=key)

    err = capsys.readouterr().err
    assert (code, out) == (2, "")
    assert message in err
    assert "c2hvcnQ" not in err
    assert "Invoice overdue" not in err


def test_another_key_gives_another_value(monkeypatch):
    other = base64.b64encode(bytes(range(200, 232))).decode()

    assert (
        run(monkeypatch, ["subject-hash", "Invoice overdue"])[1]
        != (run(monkeypatch, ["subject-hash", "Invoice overdue"], key=other)[1])
    )
