"""The ``requests`` session used for Graph and for msal's calls to Entra ID.

``requests`` lets ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` from the process
environment override a session's own ``verify``. The connector reads its CA bundle
from its settings (which may come from a different mapping than ``os.environ``,
as in tests and the CLI), so this session passes its ``verify`` with every request,
where it wins. It also carries a default timeout and, for msal, the one
connection-level retry msal's own session has (the Graph reader retries with
tenacity instead, so it asks for none).
"""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter


class ConnectorSession(requests.Session):
    """A session whose CA bundle and timeout apply to every request."""

    def __init__(self, *, ca_bundle: str | None, timeout_seconds: float, connection_retries: int = 1) -> None:
        super().__init__()
        self.verify = ca_bundle or True
        self._timeout = timeout_seconds
        adapter = HTTPAdapter(max_retries=connection_retries)
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        """Send with this session's ``verify`` and timeout unless the call gives its own."""
        if kwargs.get("verify") is None:
            kwargs["verify"] = self.verify
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().request(method, url, *args, **kwargs)
