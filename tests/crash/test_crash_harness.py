"""The crash harness at a modest count: every kill point hit, nothing lost, nothing twice."""

import pytest

from tests.crash.harness import PHASES, run_harness

pytestmark = pytest.mark.integration


def test_sigkill_at_every_phase_with_fault_storms_loses_nothing_and_duplicates_nothing():
    result = run_harness(kills=18, seed=11, verification=True)

    assert set(result.phases) == set(PHASES)
    assert result.caught_up
    assert result.concurrency_faults == []
    assert result.hwm_regressions == 0
    assert (result.lost, result.duplicated) == (0, 0), result.summary
    # Kills during the health write (phase health_write) cost only that row, never the feed.
    assert 0 < result.health_rows <= result.attempts


def test_without_workspace_verification_duplicates_are_never_more_than_reported():
    result = run_harness(kills=8, seed=4, verification=False)

    assert result.lost == 0
    assert result.hwm_regressions == 0
    assert result.duplicated <= result.possible_duplicates_reported


def test_tenant_bigger_than_one_runs_quota_moves_its_mark_every_run_through_kills():
    result = run_harness(kills=8, seed=5, verification=True, big_tenant=True)

    assert result.caught_up
    assert result.concurrency_faults == []
    assert result.hwm_regressions == 0
    assert result.hwm_stalls == 0
    assert (result.lost, result.duplicated) == (0, 0), result.summary


def test_queue_workers_killed_mid_slice_and_before_the_delete_store_every_backfill_record_once():
    # Short on purpose (a shared 2-core machine): the first worker delivery is killed between the
    # function's success and the delete, and the poison streak kills one slice's message five times.
    result = run_harness(kills=5, seed=2030, verification=True, queue=True)

    assert result.phases["worker before_delete"] == 1
    assert result.phases["worker paging"] >= 2  # the poison streak's
    assert result.poisoned >= 1
    assert result.poison_messages == result.poisoned
    assert (result.queue_left, result.slices_not_done, result.queue_faults) == (0, [], [])
    assert result.caught_up
    assert result.concurrency_faults == []
    assert (result.lost, result.duplicated) == (0, 0), result.summary


def test_a_tenant_of_tenants_in_the_shared_table_is_settled_by_its_own_rows_through_kills():
    # Every command runs with --tenant; verification keeps to the tenant's SourceTenantId.
    result = run_harness(kills=6, seed=2041, verification=True, tenants=True)

    assert result.caught_up
    assert result.concurrency_faults == []
    assert result.hwm_regressions == 0
    assert (result.lost, result.duplicated) == (0, 0), result.summary


def test_repairs_killed_at_every_point_fill_every_planted_gap_once():
    # Every third attempt drops rows from the table and runs `reconcile --repair` instead of a live
    # run; kills land in its Graph reads, its uploads and its checkpoint writes alike.
    result = run_harness(kills=9, seed=2050, verification=True, reconcile=True)

    assert result.reconcile_runs >= 3
    assert result.reconcile_kills >= 1
    assert result.planted_gaps >= 6
    assert result.reconcile_faults == []
    assert result.caught_up
    assert result.hwm_regressions == 0
    assert (result.lost, result.duplicated) == (0, 0), result.summary
