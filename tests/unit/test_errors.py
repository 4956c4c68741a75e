"""Error kinds decide exit codes; failures are sorted by cause, whichever client raised them."""

import ssl

import pytest
import requests
import urllib3
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError

from connector import errors
from connector.errors import ErrorKind, kind_for_status
from connector.transport import failure_kind, untrusted_certificate


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
