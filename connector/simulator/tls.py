"""A throw-away certificate authority for the local service simulator.

The connector talks to Entra ID, Graph and the Logs Ingestion API over HTTPS
through msal, azure-identity and azure-core, and those libraries verify server
certificates. Turning verification off in tests would hide real bugs (a
forgotten ``connection_verify``, a ``REQUESTS_CA_BUNDLE`` that is not honoured),
so the simulator serves real TLS with a certificate issued by a CA that exists
only for the test run. Clients are pointed at that CA's PEM file.

The same CA also issues RSA client certificates, because Entra's certificate
credential flow (``client_assertion``) needs one and msal/azure-identity only
sign assertions with RSA keys.
"""

from __future__ import annotations

import shutil
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes

SERVER_IDENTITIES: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True, slots=True)
class ClientCertificate:
    """An RSA client certificate registered (or registrable) with the fake Entra.

    Attributes:
        pem_path: one PEM file holding the certificate and its private key, the
            format azure-identity's ``CertificateCredential(certificate_path=...)`` reads.
        certificate_pem: the certificate alone (what an app registration stores).
        private_key_pem: the unencrypted PKCS#8 private key.
        thumbprint: SHA-1 thumbprint, upper-case hex, as the Azure portal shows it
            and as msal's ``client_credential={"thumbprint": ...}`` expects.
    """

    pem_path: Path
    certificate_pem: bytes
    private_key_pem: bytes
    thumbprint: str


class TestCertificateAuthority:
    """A trustme CA, a server certificate for the loopback names, and its files.

    The PEM files live in a temporary directory owned by this object and
    removed by :meth:`close`, so parallel test sessions never share state.
    """

    __test__ = False  # not a pytest test class despite the name

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="msgtrace-sim-ca-"))
        self._ca = trustme.CA(organization_name="Message Trace Simulator Test CA")
        server_cert = self._ca.issue_cert(*SERVER_IDENTITIES, common_name="localhost")
        self._ca_path = self._dir / "ca.pem"
        self._server_cert_path = self._dir / "server-cert.pem"
        self._server_key_path = self._dir / "server-key.pem"
        self._ca.cert_pem.write_to_path(str(self._ca_path))
        chain = b"".join(blob.bytes() for blob in server_cert.cert_chain_pems)
        self._server_cert_path.write_bytes(chain)
        server_cert.private_key_pem.write_to_path(str(self._server_key_path))
        self._client_cert_count = 0

    @property
    def ca_bundle_path(self) -> str:
        """Path of ``ca.pem``: give it to ``REQUESTS_CA_BUNDLE`` / ``connection_verify``."""
        return str(self._ca_path)

    def server_ssl_context(self) -> ssl.SSLContext:
        """A server-side context presenting the loopback certificate (TLS 1.2+)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self._server_cert_path, self._server_key_path)
        return context

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client-side context that trusts only this CA (for stdlib clients)."""
        return ssl.create_default_context(cafile=self.ca_bundle_path)

    def create_client_certificate(self, common_name: str = "message-trace-connector") -> ClientCertificate:
        """Issue an RSA client certificate and write cert + key to one PEM file.

        Args:
            common_name: subject CN; also used in the file name.

        Returns:
            The certificate, its key, the combined PEM path and its thumbprints.
        """
        leaf = self._ca.issue_cert(common_name=common_name, key_type=trustme.KeyType.RSA)
        cert_pem = leaf.cert_chain_pems[0].bytes()
        key_pem = leaf.private_key_pem.bytes()
        self._client_cert_count += 1
        safe = "".join(ch if ch.isalnum() else "-" for ch in common_name)
        path = self._dir / f"client-{self._client_cert_count}-{safe}.pem"
        path.write_bytes(cert_pem + key_pem)
        cert = x509.load_pem_x509_certificate(cert_pem)
        return ClientCertificate(
            pem_path=path,
            certificate_pem=cert_pem,
            private_key_pem=key_pem,
            thumbprint=cert.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303 - x5t is SHA-1
        )

    def close(self) -> None:
        """Delete the temporary directory and every PEM file in it."""
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> TestCertificateAuthority:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
