"""URLs and SDK texts lose their query strings and credentials before they reach a message. Pure."""

import pytest

from connector.redact import hide_addresses, safe_url, scrub

SIG = "jF9v6ELzJ4iwGiVo75ynJ%2BiViHpLOYGvbHnheePv%2BzQ%3D"
SAS = f"se=2030-01-01T00%3A00%3A00Z&sp=rwdlacu&sv=2026-10-06&ss=b&srt=sco&sig={SIG}"


def test_safe_url_drops_query_fragment_and_user_info():
    url = f"https://user:pw@acct.blob.core.windows.net/cp/locks/live.lock?{SAS}#frag"

    assert safe_url(url) == "https://acct.blob.core.windows.net/cp/locks/live.lock"


def test_safe_url_accepts_bytes_and_relative_paths():
    assert (
        safe_url(b"https://login.example/t/oauth2/v2.0/token?code=abc")
        == "https://login.example/t/oauth2/v2.0/token"
    )
    assert safe_url(f"/cp/live.json?{SAS}") == "/cp/live.json"


def test_scrub_cuts_the_query_of_a_url_in_an_azure_error_text():
    text = (
        "This request is not authorized to perform this operation.\nRequestId:1\n"
        f"URL: http://127.0.0.1:1/devstoreaccount1/cp/live.json?{SAS}."
    )

    scrubbed = scrub(text)

    assert "sig=" not in scrubbed
    assert SIG not in scrubbed
    assert scrubbed.endswith("URL: http://127.0.0.1:1/devstoreaccount1/cp/live.json.")


def test_scrub_cuts_the_query_of_urllib3s_relative_url():
    text = (
        "HTTPSConnectionPool(host='acct.blob.core.windows.net', port=443): Max retries exceeded with url: "
        f"/cp?restype=container&{SAS} (Caused by SSLError(SSLError(1, 'wrong version number')))"
    )

    scrubbed = scrub(text)

    assert SIG not in scrubbed
    assert "with url: /cp (Caused by SSLError" in scrubbed


def test_scrub_blanks_a_sas_inside_a_connection_string():
    text = f"bad value BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature={SAS};x=1"

    scrubbed = scrub(text)

    assert SIG not in scrubbed
    assert "2030-01-01" not in scrubbed
    assert "BlobEndpoint=https://acct.blob.core.windows.net/;" in scrubbed


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (
            "DefaultEndpointsProtocol=https;AccountName=a;AccountKey=S3cr3tKey+/==;EndpointSuffix=x",
            "S3cr3tKey",
        ),
        ("POST body: client_id=1&client_secret=hunter2&grant_type=client_credentials", "hunter2"),
        ("redirected with code=0.AXYZsecret&state=1", "AXYZsecret"),
        ("header Authorization: Bearer eyJ0eXAiOiJKV1QiLCJhbGciOi.payload.sig", "eyJ0eXAiOiJKV1Qi"),
        ("loose ?sv=2020-01-01&sig=abc%2Bdef in prose", "abc%2Bdef"),
        ("token access_token=opaque123, expires", "opaque123"),
    ],
)
def test_scrub_blanks_credentials_outside_urls(text, secret):
    assert secret not in scrub(text)


@pytest.mark.parametrize(
    "text",
    [
        "checkpoint https://acct.blob.core.windows.net/cp/live.json changed under this run",
        "Microsoft Graph answered 400 for https://graph.microsoft.com/v1.0/admin/exchange/tracing/messageTraces",
        "status=Delivered first=1 response se en ErrorCode:LeaseAlreadyPresent",
        "[Errno 111] Connection refused",
    ],
)
def test_scrub_leaves_text_without_credentials_as_it_was(text):
    assert scrub(text) == text


def test_scrub_cuts_a_graph_skiptoken_and_keeps_the_sentence():
    text = "paging loop (https://graph.microsoft.com/v1.0/admin/x?$skiptoken=abc123), stopping"

    assert scrub(text) == "paging loop (https://graph.microsoft.com/v1.0/admin/x), stopping"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "row with RecipientAddress victim@fabrikam.example refused",
            "row with RecipientAddress <address> refused",
        ),
        ("'Bob.Smith+x@Contoso.COM'", "'<address>'"),
        ("<ünï@bücher.example>.", "<<address>>."),
        ("two: a@b.example, c@d.example", "two: <address>, <address>"),
    ],
)
def test_addresses_a_service_echoes_are_hidden(text, expected):
    assert hide_addresses(text) == expected


@pytest.mark.parametrize("text", ["id=abc@def", "retry @ 5 s", "no address here", "Bearer abc"])
def test_text_without_an_address_is_left_alone(text):
    assert hide_addresses(text) == text
