"""The look-alike watchlist: what it lists, that the organisation's own domains never appear, its CSV, its limits."""

from __future__ import annotations

import pytest

from connector.errors import ArgumentError, ErrorKind
from connector.lookalikes import (
    HEADER,
    Limit,
    LookalikeRow,
    Permutation,
    refuse_over_limits,
    render_csv,
    watchlist_rows,
)


def _rows(permutations: dict[str, list[tuple[str, str]]], **options: bool) -> list[LookalikeRow]:
    return watchlist_rows(
        {original: [Permutation(d, f) for d, f in found] for original, found in permutations.items()},
        **options,
    )


def test_the_originals_and_every_own_domain_or_subdomain_are_dropped_whichever_domain_generated_them():
    rows = _rows(
        {
            "contoso.com": [
                ("contoso.com", "*original"),
                ("c0ntoso.com", "homoglyph"),
                ("contoso.uk", "various"),
            ],
            "contoso.uk": [
                ("contoso.com", "tld-swap"),
                ("mail.contoso.com", "various"),
                ("contoso.ukk", "repetition"),
            ],
        }
    )

    assert [row.lookalike_domain for row in rows] == ["c0ntoso.com", "contoso.ukk"]


def test_a_lookalike_of_two_domains_is_listed_once_for_the_first_in_sort_order():
    rows = _rows(
        {"fabrikam.net": [("fabrikam.co", "various")], "fabrikam.com": [("fabrikam.co", "omission")]}
    )

    assert rows == [LookalikeRow("fabrikam.com", "fabrikam.co", "omission")]


def test_permutations_are_stored_in_the_spelling_the_table_holds():
    rows = _rows({"contoso.com": [("C0NTOSO.com.", "homoglyph"), ("cоntoso.com", "cyrillic")]})

    assert {row.lookalike_domain for row in rows} == {"c0ntoso.com", "xn--cntoso-wqf.com"}


def test_unicode_homoglyphs_are_left_out_unless_asked_for_and_other_unicode_permutations_kept():
    found = {
        "contoso.com": [
            ("xn--cntoso-wqf.com", "homoglyph"),
            ("c0ntoso.com", "homoglyph"),
            ("xn--cntoso-wqf.com", "cyrillic"),
        ]
    }

    default = _rows(found)
    everything = _rows(found, unicode_homoglyphs=True)

    assert {(r.lookalike_domain, r.fuzzer) for r in default} == {
        ("c0ntoso.com", "homoglyph"),
        ("xn--cntoso-wqf.com", "cyrillic"),
    }
    assert {r.lookalike_domain for r in everything} == {"c0ntoso.com", "xn--cntoso-wqf.com"}


def test_rows_are_sorted_by_original_then_lookalike_whatever_order_they_came_in():
    found = [("zontoso.com", "replacement"), ("acontoso.com", "insertion"), ("contos.com", "omission")]
    rows = _rows({"contoso.com": found, "a.example": [("b.example", "replacement")]})
    reversed_rows = _rows({"a.example": [("b.example", "replacement")], "contoso.com": found[::-1]})

    assert rows == reversed_rows
    assert [r.lookalike_domain for r in rows] == ["b.example", "acontoso.com", "contos.com", "zontoso.com"]


def test_the_csv_is_the_header_then_one_unquoted_line_per_row():
    text = render_csv([LookalikeRow("contoso.com", "c0ntoso.com", "homoglyph")])

    assert text == "LookalikeDomain,OriginalDomain,Fuzzer\nc0ntoso.com,contoso.com,homoglyph\n"
    assert render_csv([]) == ",".join(HEADER) + "\n"


def test_a_field_that_would_need_quoting_is_refused_rather_than_shifting_the_columns():
    with pytest.raises(ValueError, match="quoting"):
        render_csv([LookalikeRow("contoso.com", 'a"b.com', "x")])


def test_a_watchlist_over_a_character_limit_is_refused_naming_how_many_rows_and_which_domains_to_drop():
    rows = [LookalikeRow("contoso.com", f"c{i:03}.com", "addition") for i in range(10)] + [
        LookalikeRow("a.example", "b.example", "replacement")
    ]
    size = len(render_csv(rows))

    with pytest.raises(ArgumentError) as caught:
        refuse_over_limits(rows, [Limit("a test limit", size - 1, "characters", "test")])

    message = str(caught.value)
    assert caught.value.kind is ErrorKind.SETTING
    assert "\n" not in message
    assert f"would be {size:,} characters (11 rows), over the {size - 1:,} of a test limit" in message
    assert "drop at least 1 row," in message
    assert "leave out 1 of the 2 domains (contoso.com)" in message


def test_a_watchlist_over_a_row_limit_is_refused_and_one_at_the_limit_passes():
    rows = [LookalikeRow("contoso.com", f"c{i}.com", "addition") for i in range(5)]
    limit = [Limit("rows", 4, "rows", "test")]

    with pytest.raises(
        ArgumentError, match=r"5 rows \(5 rows\), over the 4 of rows \(test\): drop at least 1 row,"
    ):
        refuse_over_limits(rows, limit)
    refuse_over_limits(rows[:4], limit)


def test_the_refusal_suggests_leaving_out_unicode_homoglyphs_only_when_they_are_listed():
    plain = [LookalikeRow("contoso.com", "c0ntoso.com", "homoglyph")]
    unicode = [LookalikeRow("contoso.com", "xn--cntoso-wqf.com", "homoglyph")]
    tiny = [Limit("tiny", 10, "characters", "test")]

    with pytest.raises(ArgumentError) as without:
        refuse_over_limits(plain, tiny)
    with pytest.raises(ArgumentError) as with_unicode:
        refuse_over_limits(unicode, tiny)

    assert "--unicode-homoglyphs" not in str(without.value)
    assert str(with_unicode.value).endswith("or --unicode-homoglyphs")
