"""Error kinds decide exit codes; failures are sorted by cause, whichever client raised them."""

import ssl
from datetime import timedelta
from types import SimpleNamespace

import pytest
import requests
import urllib3
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

from connector import errors
from connector.errors import ErrorKind, kind_for_status
from connector.ports import Deadline
from connector.transport import (
    DeadlineRetryPolicy,
    WaitBeyondDeadline,
    describe_failure,
    failure_kind,
    untrusted_certificate,
)


def test_each_kind_has_its_documented_exit_code():
    assert {kind.name: kind.exit_code for kind in ErrorKind} == {
        "FATAL": 1,
        "SETTING": 2,
        "PERMISSION": 3,
        "CONFLICT": 4,
        "LOCK": 5,
        "TRANSIENT": 6,
    }


@pytest.mark.parametrize(
    ("error", "exit_code"),
    [
        (errors.ConfigError([("TENANT_ID", "is required")]), 2),
        (errors.BackfillError("overlaps"), 2),
        (errors.AuthenticationError("refused"), 3),
        (errors.ServicePrincipalMissingError("x"), 3),
        (errors.GraphPermissionError("x"), 3),
        (errors.GraphRequestError(400, "u", "x"), 1),
        (errors.GraphRequestError(404, "u", "x"), 2),
        (errors.GraphUnavailableError("x"), 6),
        (errors.PagingLoopError("u", 2), 1),
        (errors.SinkError("x", rows_failed=1, status=403), 3),
        (errors.SinkError("x", rows_failed=1, status=404), 2),
        (errors.SinkError("x", rows_failed=1, status=503), 6),
        (errors.SinkError("x", rows_failed=1, status=400), 1),
        (errors.SinkError("x", rows_failed=1, status=None), 6),
        (errors.CheckpointConflictError("x"), 4),
        (errors.CheckpointFormatError("x"), 1),
        (errors.RunLockedError("x"), 5),
        (errors.LockLostError("x"), 5),
        (errors.CheckpointError("x", kind=ErrorKind.TRANSIENT), 6),
    ],
)
def test_exit_code_comes_from_the_errors_kind(error, exit_code):
    assert error.exit_code == exit_code


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, ErrorKind.PERMISSION),
        (403, ErrorKind.PERMISSION),
        (404, ErrorKind.SETTING),
        (400, ErrorKind.FATAL),
        (413, ErrorKind.FATAL),
        (429, ErrorKind.TRANSIENT),
        (500, ErrorKind.TRANSIENT),
        (503, ErrorKind.TRANSIENT),
        (501, ErrorKind.FATAL),
        (None, ErrorKind.TRANSIENT),
    ],
)
def test_final_http_status_means_the_same_kind_from_every_service(status, kind):
    assert kind_for_status(status) is kind


def untrusted_requests_error() -> requests.exceptions.SSLError:
    """What requests raises for a certificate it does not trust (urllib3 in between)."""
    verification = ssl.SSLCertVerificationError(
        1, "[SSL: CERTIFICATE_VERIFY_FAILED] unable to get local issuer"
    )
    reason = urllib3.exceptions.SSLError(verification)
    return requests.exceptions.SSLError(urllib3.exceptions.MaxRetryError(None, "/", reason=reason))


def wrapped(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as err:
            raise outer from err
    except BaseException as err:
        return err


class TestFailureKind:
    def test_untrusted_certificate_is_a_setting_even_when_wrapped_by_azure_identity(self):
        error = wrapped(
            ClientAuthenticationError("Authentication failed"),
            ServiceRequestError("x", error=untrusted_requests_error()),
        )

        assert untrusted_certificate(error)
        assert failure_kind(error) is ErrorKind.SETTING

    def test_unreachable_host_wrapped_by_azure_identity_is_transient_not_permission(self):
        error = wrapped(
            ClientAuthenticationError("Authentication failed"), requests.ConnectionError("refused")
        )

        assert failure_kind(error, default=ErrorKind.PERMISSION) is ErrorKind.TRANSIENT

    def test_status_decides_for_an_answered_request(self):
        error = HttpResponseError("This request is not authorized to perform this operation.")
        error.status_code = 403

        assert failure_kind(error) is ErrorKind.PERMISSION

    def test_refused_credential_without_a_transport_cause_takes_the_default(self):
        error = ClientAuthenticationError("AADSTS7000215: Invalid client secret provided.")

        assert failure_kind(error, default=ErrorKind.PERMISSION) is ErrorKind.PERMISSION
        assert failure_kind(ValueError("x")) is ErrorKind.FATAL


class TestThrottling:
    def test_only_a_429_from_logs_ingestion_is_throttling_and_it_still_counts_the_refused_rows(self):
        error = errors.IngestionThrottledError(
            100000, rows_failed=3, where="DCR d, stream s", detail="(TooManyRequests) slow down"
        )

        assert isinstance(error, errors.ThrottledError)
        assert isinstance(error, errors.SinkError)
        assert (error.status, error.rows_failed, error.retry_after) == (429, 3, 100000)
        assert "100000 s" in str(error)
        assert "(TooManyRequests) slow down" in str(error)

    def test_graph_throttling_says_whether_graph_asked_for_the_wait(self):
        assert "asked to wait 600 s" in str(errors.GraphThrottledError(600))
        assert "the next retry would wait 45 s" in str(errors.GraphThrottledError(45, asked=False))


class FakeTransport:
    def __init__(self) -> None:
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def answer(status: int, **headers: str) -> SimpleNamespace:
    return SimpleNamespace(http_response=SimpleNamespace(status_code=status, headers=headers))


class TestDeadlineRetryPolicy:
    """azure-core's retry waits, but never past the run's deadline (a Retry-After of a day)."""

    @pytest.fixture
    def policy(self) -> DeadlineRetryPolicy:
        return DeadlineRetryPolicy(Deadline(timedelta(seconds=10)), retry_backoff_factor=10)

    def test_a_wait_that_fits_is_slept_as_azure_core_would(self, policy):
        transport = FakeTransport()

        policy.sleep({"history": []}, transport, answer(503, **{"Retry-After": "2"}))

        assert transport.slept == [2.0]

    @pytest.mark.parametrize(
        "headers",
        [
            {"Retry-After": "100000"},
            {"retry-after-ms": "60000"},
            {"Retry-After": "Fri, 31 Dec 2100 00:00:00 GMT"},
        ],
    )
    def test_a_retry_after_beyond_the_deadline_is_raised_not_slept(self, policy, headers):
        transport = FakeTransport()

        with pytest.raises(WaitBeyondDeadline) as raised:
            policy.sleep({"history": []}, transport, answer(429, **headers))

        assert transport.slept == []
        assert raised.value.status == 429
        assert raised.value.asked
        assert raised.value.wait > 10

    def test_a_backoff_beyond_the_deadline_names_the_last_failure(self, policy):
        transport = FakeTransport()
        history = [SimpleNamespace(http_response=None, error=ServiceRequestError("connection refused"))] * 2

        with pytest.raises(WaitBeyondDeadline) as raised:
            policy.sleep({"history": history, "backoff": 10, "max_backoff": 120}, transport)

        assert transport.slept == []
        assert raised.value.status is None
        assert not raised.value.asked
        assert raised.value.wait == 20
        assert "connection refused" in raised.value.detail


def test_described_sdk_failure_carries_no_sas_from_the_url_it_names():
    wrapped = requests.exceptions.ConnectionError(
        "HTTPSConnectionPool(host='acct.blob.core.windows.net', port=443): Max retries exceeded with url: "
        "/cp/live.json?sv=2026-10-06&sig=SECRETSIG%3D (Caused by ProxyError('Unable to connect to proxy'))"
    )
    error = ServiceRequestError(str(wrapped), error=wrapped)

    kind, text = describe_failure(error)

    assert kind is ErrorKind.TRANSIENT
    assert "SECRETSIG" not in text
    assert "with url: /cp/live.json (Caused by ProxyError" in text
