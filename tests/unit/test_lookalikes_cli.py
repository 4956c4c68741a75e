"""``python -m connector lookalikes``: dnstwist's permutations, offline, as the watchlist CSV; ``--check``; refusals."""

from __future__ import annotations

import csv
import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from connector.cli import main

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "infra" / "sentinel" / "Watchlists" / "LookalikeDomains.csv"


def run(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["--no-progress", "lookalikes", *args], out=out)
    return code, out.getvalue()


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Generation is offline: any name lookup or connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("lookalikes tried to use the network")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv("LOCAL_DOMAINS", raising=False)


def test_the_watchlist_holds_well_known_lookalike_classes_and_never_an_own_domain(tmp_path):
    output = tmp_path / "LookalikeDomains.csv"

    code, out = run("--domain", "modern.com", "--domain", "Modern.co.uk", "--output", str(output))

    rows = read_rows(output)
    by_domain = {row["LookalikeDomain"]: row for row in rows}
    assert code == 0
    assert list(rows[0]) == ["LookalikeDomain", "OriginalDomain", "Fuzzer"]
    assert by_domain["modem.com"] == {  # rn -> m
        "LookalikeDomain": "modem.com",
        "OriginalDomain": "modern.com",
        "Fuzzer": "homoglyph",
    }
    assert {"moderna.com", "modrn.com", "mdoern.com", "moddern.com", "mod-ern.com", "moderncom.com"} <= set(
        by_domain
    )
    assert {"addition", "omission", "transposition", "bitsquatting", "hyphenation"} <= {
        row["Fuzzer"] for row in rows
    }
    assert {row["OriginalDomain"] for row in rows} == {"modern.com", "modern.co.uk"}
    assert not {"modern.com", "modern.co.uk"} & set(by_domain)
    assert len(by_domain) == len(rows)  # one row per look-alike (the SearchKey)
    assert all(domain == domain.lower() and domain.isascii() for domain in by_domain)
    assert not any(row["Fuzzer"] == "homoglyph" and "xn--" in row["LookalikeDomain"] for row in rows)
    assert out.startswith(
        f"wrote {len(rows):,} look-alike rows for 2 domains to {output}; next: redeploy the Bicep"
    )


def test_an_idn_domain_is_permuted_in_the_form_the_table_holds(tmp_path):
    output = tmp_path / "out.csv"

    code, _ = run("--domain", "Bücher.example", "--output", str(output))

    rows = read_rows(output)
    assert code == 0
    assert {row["OriginalDomain"] for row in rows} == {"xn--bcher-kva.example"}
    assert all(row["LookalikeDomain"].isascii() for row in rows)
    assert "xn--bcher-kva.example" not in {row["LookalikeDomain"] for row in rows}
    assert {"bcher.example", "xn--bcherr-3ya.example"} <= {row["LookalikeDomain"] for row in rows}


def test_the_domains_come_from_local_domains_when_no_domain_is_given(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_DOMAINS", "contoso.com, fabrikam.com")
    output = tmp_path / "out.csv"

    code, _ = run("--output", str(output))

    assert code == 0
    assert {row["OriginalDomain"] for row in read_rows(output)} == {"contoso.com", "fabrikam.com"}


def test_a_permutation_that_is_another_own_domain_is_left_out(tmp_path):
    output = tmp_path / "out.csv"

    code, _ = run("--domain", "contoso.com", "--output", str(output))
    assert code == 0
    assert "contosocom.com" in {row["LookalikeDomain"] for row in read_rows(output)}

    code, _ = run("--domain", "contoso.com", "--domain", "contosocom.com", "--output", str(output))
    assert code == 0
    assert "contosocom.com" not in {row["LookalikeDomain"] for row in read_rows(output)}


def test_without_a_domain_or_local_domains_it_is_refused_naming_the_setting(tmp_path, capsys):
    code, out = run("--output", str(tmp_path / "out.csv"))

    err = capsys.readouterr().err
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("error: setting LOCAL_DOMAINS: is not set and no --domain was given")
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("domain", ["", "   ", "not a domain", "localhost"])
def test_an_empty_or_bad_domain_is_refused_in_one_line(domain, tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        run("--domain", domain, "--output", str(tmp_path / "out.csv"))

    err = capsys.readouterr().err
    assert caught.value.code == 2
    assert "argument --domain:" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "out.csv").exists()


def test_check_passes_on_a_fresh_file_and_fails_after_an_edit_or_when_missing(tmp_path):
    output = tmp_path / "out.csv"
    assert run("--domain", "contoso.com", "--output", str(output))[0] == 0

    fresh, fresh_out = run("--domain", "contoso.com", "--output", str(output), "--check")
    output.write_text(output.read_text().replace("c0ntoso.com,", "c0nt0so.com,", 1))
    edited, edited_out = run("--domain", "contoso.com", "--output", str(output), "--check")
    other, _ = run("--domain", "fabrikam.com", "--output", str(output), "--check")
    missing, missing_out = run("--domain", "contoso.com", "--output", str(tmp_path / "none.csv"), "--check")

    assert (fresh, edited, other, missing) == (0, 1, 1, 1)
    assert f"{output} is current: 1 domain," in fresh_out
    assert "differs from what the domains give" in edited_out
    assert "does not exist" in missing_out
    assert "c0nt0so.com," in output.read_text()  # --check writes nothing
    assert not (tmp_path / "none.csv").exists()


def test_check_accepts_a_file_checked_out_with_crlf_line_ends(tmp_path):
    output = tmp_path / "out.csv"
    run("--domain", "contoso.com", "--output", str(output))
    output.write_bytes(output.read_bytes().replace(b"\n", b"\r\n"))

    assert run("--domain", "contoso.com", "--output", str(output), "--check")[0] == 0


def test_a_watchlist_over_the_deployment_limit_is_refused_before_anything_is_written(tmp_path, capsys):
    output = tmp_path / "out.csv"
    output.write_text("LookalikeDomain,OriginalDomain,Fuzzer\n")

    code, out = run("--domain", "northwindtraders.com", "--unicode-homoglyphs", "--output", str(output))

    err = capsys.readouterr().err
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert "over the 131,072 of Bicep's loadTextContent" in err
    assert "leave out 1 of the 1 domain (northwindtraders.com) or --unicode-homoglyphs" in err
    assert output.read_text() == "LookalikeDomain,OriginalDomain,Fuzzer\n"


@pytest.mark.parametrize("name", ["missing/out.csv", "a-directory"])
def test_an_output_that_cannot_be_written_is_refused_in_one_line_leaving_no_temporary_file(
    name, tmp_path, capsys
):
    (tmp_path / "a-directory").mkdir()

    code, _ = run("--domain", "contoso.com", "--output", str(tmp_path / name))

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: --output: cannot write ")
    assert err.count("\n") == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a-directory"]


def test_the_file_is_replaced_whole_with_no_temporary_file_left(tmp_path):
    output = tmp_path / "out.csv"
    output.write_text("old\n")

    code, _ = run("--domain", "contoso.com", "--output", str(output))

    assert code == 0
    assert output.read_text().startswith("LookalikeDomain,OriginalDomain,Fuzzer\n")
    assert [path.name for path in tmp_path.iterdir()] == ["out.csv"]


def test_the_default_output_outside_a_checkout_is_refused(tmp_path):
    from connector.errors import ArgumentError
    from connector.lookalikes_command import DEFAULT_OUTPUT, default_output

    with pytest.raises(ArgumentError, match="--output is required here"):
        default_output(tmp_path)
    assert default_output(ROOT) == ROOT / DEFAULT_OUTPUT


def test_importing_dnstwist_leaves_the_default_socket_timeout_alone():
    code = (
        "import socket; socket.setdefaulttimeout(None); import connector.lookalikes_command; "
        "print(socket.getdefaulttimeout())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )

    assert result.stdout.strip() == "None"


def test_two_runs_are_byte_identical_whatever_the_hash_seed(tmp_path):
    outputs = []
    for seed in ("1", "2"):
        output = tmp_path / f"out-{seed}.csv"
        subprocess.run(
            [sys.executable, "-m", "connector", "lookalikes", "--domain", "contoso.com", "--domain",
             "fabrikam.com", "--output", str(output)],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            check=True,
            timeout=120,
        )  # fmt: skip
        outputs.append(output.read_bytes())

    assert outputs[0] == outputs[1]
    assert outputs[0].count(b"\n") > 400


def test_the_committed_watchlist_is_the_header_only():
    assert COMMITTED.read_bytes() == b"LookalikeDomain,OriginalDomain,Fuzzer\n"
