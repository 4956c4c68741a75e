"""Which tenant a log line is about, when one deployment reads several.

Why: with ``TENANTS`` set, the function app runs several tenants' feeds at once, in
the same worker process (the Python worker runs invocations on a thread pool), so
their log lines interleave. The host ties a line to its invocation only on the
invocation's own thread, not on the threads a run starts (lease renewal, Graph
prefetch). So while :func:`tenant_logging` is active, each record of the connector's
loggers starts with ``[tenant NAME]`` and every record carries the attribute
``connector_tenant`` (for a handler that exports attributes as dimensions).

The tenant lives in a :class:`contextvars.ContextVar`, so concurrent runs on other
threads keep their own; a thread a run starts inherits it through
:func:`in_this_context`. Tenant names are ``TENANTS`` names (lower-case letters,
digits, ``-``): never a secret, and never a ``%`` that would disturb formatting.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")

_TENANT: contextvars.ContextVar[str | None] = contextvars.ContextVar("connector_tenant", default=None)
_OUR_LOGGERS = "connector"
_installed = False
_install_lock = threading.Lock()


def current_tenant() -> str | None:
    """The tenant of the run logging on this thread, if one was named."""
    return _TENANT.get()


@contextmanager
def tenant_logging(name: str | None) -> Iterator[None]:
    """Name ``name`` in the log records made inside the block (``None``: a single-tenant deployment)."""
    _install()
    token = _TENANT.set(name)
    try:
        yield
    finally:
        _TENANT.reset(token)


def in_this_context(work: Callable[_P, _R]) -> Callable[_P, _R]:
    """``work`` run in a copy of the caller's context: what a thread the run starts needs to keep its tenant."""
    context = contextvars.copy_context()

    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        return context.run(work, *args, **kwargs)

    return run


def _install() -> None:
    """Wrap the record factory once per process (idempotent; other factories are kept)."""
    global _installed  # noqa: PLW0603 - one process-wide hook
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            tenant = _TENANT.get()
            record.connector_tenant = tenant
            if tenant is not None and (
                record.name == _OUR_LOGGERS or record.name.startswith(_OUR_LOGGERS + ".")
            ):
                record.msg = f"[tenant {tenant}] {record.msg}"
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
