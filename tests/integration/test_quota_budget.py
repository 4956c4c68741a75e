"""The Graph quota budget shared through Blob Storage (Azurite): holders never exceed the limit together."""

from __future__ import annotations

import contextlib
import threading
from datetime import timedelta

import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import ContainerClient

from connector.errors import GraphQuotaWaitError
from connector.ports import Deadline
from connector.quota import Caller, QuotaBudget, QuotaPolicy, admit
from connector.quota_store import BlobBudgetStore, QuotaGate, quota_blob_name

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TENANT = "contoso.onmicrosoft.com"


def holder(azurite, container_name: str, policy: QuotaPolicy) -> QuotaGate:
    """One run's gate with its own client, as a second instance or command would have."""
    container = ContainerClient.from_connection_string(azurite.connection_string, container_name)
    with contextlib.suppress(ResourceExistsError):
        container.create_container()
    return QuotaGate(BlobBudgetStore(container, TENANT), policy, Caller.LIVE)


def test_two_holders_sharing_one_budget_never_exceed_the_limit_together(azurite, container_name, container):
    # Burst share 1: the hard cap, not the pace, is what stops them; all within one window.
    policy = QuotaPolicy(limit=6, window_seconds=30.0, live_reserve_percent=0.0, burst_share=1.0)
    gates = [holder(azurite, container_name, policy) for _ in range(2)]
    granted = [0, 0]

    def take_all(index: int) -> None:
        deadline = Deadline(timedelta(seconds=5))
        try:
            while True:
                gates[index].acquire(deadline)
                granted[index] += 1
        except GraphQuotaWaitError:
            pass

    threads = [threading.Thread(target=take_all, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    stored = QuotaBudget.decode(container.download_blob(quota_blob_name(TENANT)).readall())
    assert sum(granted) == 6
    assert len(stored.sent) == 6


def test_a_write_that_loses_the_etag_race_reads_again_and_decides_on_the_winner(container):
    policy = QuotaPolicy(limit=1, window_seconds=30.0, live_reserve_percent=0.0)
    container.create_container()
    store = BlobBudgetStore(container, TENANT)
    rival = BlobBudgetStore(container, TENANT)
    seen: list[int] = []

    def decide(budget: QuotaBudget) -> tuple[QuotaBudget | None, float]:
        seen.append(len(budget.sent))
        if len(seen) == 1:  # another instance takes the only slot between our read and our write
            rival.update(lambda b: (admit(b, policy, Caller.LIVE, 1000.0).budget, None))
        answer = admit(budget, policy, Caller.LIVE, 1000.0)
        return answer.budget, answer.wait

    wait = store.update(decide)

    assert seen == [0, 1]
    assert store.conflicts == 1
    assert wait > 0  # decided again on the winner's record: no slot left


def test_a_holder_pacing_alone_reads_the_budget_once_and_then_decides_on_its_own_writes(container):
    container.create_container()
    policy = QuotaPolicy(limit=100, window_seconds=300.0, live_reserve_percent=0.0, burst_share=1.0)
    store = BlobBudgetStore(container, TENANT)
    gate = QuotaGate(store, policy, Caller.LIVE)
    deadline = Deadline(timedelta(seconds=30))

    for _ in range(5):
        gate.acquire(deadline)

    assert store.reads == 1  # the first slot; each later one is decided on the budget this holder wrote
    stored = QuotaBudget.decode(container.download_blob(quota_blob_name(TENANT)).readall())
    assert len(stored.sent) == 5


def test_a_holder_whose_remembered_budget_another_wrote_over_reads_again_and_counts_both(container):
    # The first holder remembers the budget it wrote; a second holder writes after it. The first
    # holder's next write is refused by the ETag, and it decides again on the second's record.
    container.create_container()
    policy = QuotaPolicy(limit=3, window_seconds=300.0, live_reserve_percent=0.0, burst_share=1.0)
    first = BlobBudgetStore(container, TENANT)
    second = BlobBudgetStore(container, TENANT)
    deadline = Deadline(timedelta(seconds=5))
    QuotaGate(first, policy, Caller.LIVE).acquire(deadline)
    QuotaGate(second, policy, Caller.LIVE).acquire(deadline)
    QuotaGate(second, policy, Caller.LIVE).acquire(deadline)

    with pytest.raises(GraphQuotaWaitError):
        QuotaGate(first, policy, Caller.LIVE).acquire(deadline)  # all 3 slots are taken: it must see that

    assert first.conflicts == 1
    stored = QuotaBudget.decode(container.download_blob(quota_blob_name(TENANT)).readall())
    assert len(stored.sent) == 3
