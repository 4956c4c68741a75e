"""The nextLink paginator as a state machine: no server, no HTTP."""

import pytest

from connector.errors import GraphRequestError, GraphResponseError, PagingLoopError
from connector.paging import NextLinkPaginator

GRAPH = "https://graph.example"
FIRST = f"{GRAPH}/v1.0/admin/exchange/tracing/messageTraces?$top=5000"


def link(token: str) -> str:
    return f"{FIRST}&$skiptoken={token}"


def refusal(status: int = 400) -> GraphRequestError:
    return GraphRequestError(status, "messageTraces", "The $skiptoken is malformed or has expired.")


class TestAdvance:
    def test_follows_next_links_until_a_page_has_none(self):
        paginator = NextLinkPaginator(FIRST, origin=GRAPH)
        visited = []

        for next_link in (link("a"), link("b"), None):
            visited.append(paginator.url)
            paginator.advance(next_link)

        assert visited == [FIRST, link("a"), link("b")]
        assert paginator.url is None
        assert paginator.pages == 3

    def test_next_link_equal_to_the_current_page_is_a_loop(self):
        paginator = NextLinkPaginator(FIRST, origin=GRAPH)
        paginator.advance(link("a"))

        with pytest.raises(PagingLoopError, match="repeated after 2 pages"):
            paginator.advance(link("a"))

    def test_next_link_back_to_an_earlier_page_is_a_loop(self):
        paginator = NextLinkPaginator(FIRST, origin=GRAPH)
        paginator.advance(link("a"))
        paginator.advance(link("b"))

        with pytest.raises(PagingLoopError):
            paginator.advance(link("a"))

    @pytest.mark.parametrize(
        "next_link",
        [
            "https://attacker.example/v1.0/x",
            "http://graph.example/v1.0/x",
            "https://graph.example:8443/x",
            42,
        ],
    )
    def test_next_link_off_graphs_origin_is_refused(self, next_link):
        paginator = NextLinkPaginator(FIRST, origin=GRAPH)

        with pytest.raises(GraphResponseError, match="must not leave Graph"):
            paginator.advance(next_link)

    def test_advancing_past_the_last_page_is_a_bug(self):
        paginator = NextLinkPaginator(FIRST, origin=GRAPH)
        paginator.advance(None)

        with pytest.raises(RuntimeError):
            paginator.advance(None)


class TestRestart:
    def test_refused_skiptoken_restarts_the_window_once_from_its_first_page(self):
        paginator = NextLinkPaginator(FIRST, origin=GRAPH)
        paginator.advance(link("a"))

        paginator.restart(refusal())

        assert paginator.url == FIRST
        paginator.advance(link("a"))  # the same links again are not a loop after a restart
        assert paginator.url == link("a")

    def test_second_refusal_in_the_same_window_is_raised(self):
        paginator = NextLinkPaginator(FIRST, origin=GRAPH)
        paginator.advance(link("a"))
        paginator.restart(refusal())
        paginator.advance(link("a"))
        error = refusal()

        with pytest.raises(GraphRequestError) as raised:
            paginator.restart(error)

        assert raised.value is error

    def test_refused_first_page_is_raised_not_restarted(self):
        paginator = NextLinkPaginator(FIRST, origin=GRAPH)

        with pytest.raises(GraphRequestError):
            paginator.restart(refusal())

    def test_refusal_other_than_400_is_raised(self):
        paginator = NextLinkPaginator(FIRST, origin=GRAPH)
        paginator.advance(link("a"))

        with pytest.raises(GraphRequestError):
            paginator.restart(refusal(404))
