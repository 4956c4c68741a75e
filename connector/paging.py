"""Graph ``@odata.nextLink`` paging as a state machine, apart from HTTP. Pure.

The reader asks :attr:`NextLinkPaginator.url` for the page to fetch, and after each
page calls :meth:`~NextLinkPaginator.advance` with that page's nextLink. The
paginator decides whether there is more, and refuses what must not be followed:

* a nextLink to another scheme or host (the bearer token must not leave Graph);
* a nextLink already followed in this window (a server loop would page forever);
* a second refusal of a nextLink: Graph refusing a ``$skiptoken`` (400) restarts the
  window from its first page once (:meth:`~NextLinkPaginator.restart`); the pages
  already read come again and the ledger drops them, so nothing is lost or sent twice.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from connector.errors import GraphRequestError, GraphResponseError, PagingLoopError


class NextLinkPaginator:
    """Where the next page of one window comes from."""

    def __init__(self, first_url: str, *, origin: str) -> None:
        self._first = first_url
        self._origin = urlsplit(origin)[:2]
        self._origin_text = origin
        self._url: str | None = first_url
        self._followed: set[str] = set()
        self._restarted = False
        self.pages = 0

    @property
    def url(self) -> str | None:
        """The page to fetch next; None once the window is read to its end."""
        return self._url

    def advance(self, next_link: object) -> None:
        """Move past the page just read, whose ``@odata.nextLink`` was ``next_link`` (None: last page).

        Raises:
            GraphResponseError: the nextLink is not a URL on Graph's own origin.
            PagingLoopError: the nextLink was already followed for this window.
        """
        if self._url is None:
            raise RuntimeError("advance() after the last page")
        self.pages += 1
        if next_link is None:
            self._url = None
            return
        if not isinstance(next_link, str) or urlsplit(next_link)[:2] != self._origin:
            raise GraphResponseError(
                f"Microsoft Graph sent an @odata.nextLink outside {self._origin_text}: {str(next_link)[:200]}; "
                "not following it (the bearer token must not leave Graph)"
            )
        if next_link in self._followed or next_link == self._url:
            raise PagingLoopError(next_link, self.pages)
        self._followed.add(self._url)
        self._url = next_link

    def restart(self, refusal: GraphRequestError) -> None:
        """Start the window again after Graph refused a nextLink; only once, and only for a 400.

        Raises:
            GraphRequestError: ``refusal`` itself, when a restart cannot help (not a 400, the
                first page was refused, or the window was already restarted).
        """
        if refusal.status != 400 or self._url == self._first or self._restarted:
            raise refusal
        self._restarted = True
        self._url = self._first
        self._followed = set()
