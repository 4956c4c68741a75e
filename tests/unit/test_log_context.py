"""Log lines of a tenant's run name the tenant, on the threads it starts too, and never another's."""

from __future__ import annotations

import logging
import threading

from connector.log_context import current_tenant, in_this_context, tenant_logging

connector_log = logging.getLogger("connector.sync")
other_log = logging.getLogger("another_library")  # not one of the connector's loggers


def test_a_connector_line_inside_a_tenant_s_run_starts_with_its_name_and_carries_it(caplog):
    caplog.set_level(logging.INFO, logger="connector")
    caplog.set_level(logging.INFO, logger="another_library")
    with tenant_logging("contoso"):
        connector_log.info("slice %s stopped", "a..b")
        other_log.info("retrying")
    connector_log.info("outside")

    inside, other, outside = caplog.records
    assert inside.getMessage() == "[tenant contoso] slice a..b stopped"
    assert (inside.connector_tenant, other.connector_tenant) == ("contoso", "contoso")  # type: ignore[attr-defined]
    assert other.getMessage() == "retrying"  # other libraries' lines keep their text
    assert outside.getMessage() == "outside"
    assert outside.connector_tenant is None  # type: ignore[attr-defined]


def test_a_thread_the_run_starts_keeps_the_tenant_and_concurrent_runs_keep_their_own(caplog):
    caplog.set_level(logging.INFO, logger="connector")
    started = threading.Barrier(2)

    def run(tenant: str) -> None:
        with tenant_logging(tenant):
            started.wait(timeout=5)  # both runs are inside their context at once
            helper = threading.Thread(target=in_this_context(lambda: connector_log.info("lease renewed")))
            helper.start()
            helper.join()
            connector_log.info("run done")

    runs = [threading.Thread(target=run, args=(name,)) for name in ("contoso", "fabrikam")]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join()

    lines = sorted(record.getMessage() for record in caplog.records)
    assert lines == [
        "[tenant contoso] lease renewed",
        "[tenant contoso] run done",
        "[tenant fabrikam] lease renewed",
        "[tenant fabrikam] run done",
    ]
    assert current_tenant() is None


def test_a_single_tenant_deployment_s_lines_are_unchanged(caplog):
    caplog.set_level(logging.INFO, logger="connector")
    with tenant_logging(None):
        connector_log.info("run done")

    assert caplog.records[0].getMessage() == "run done"
