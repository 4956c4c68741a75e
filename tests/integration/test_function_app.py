"""The timer function object in function_app.py, end to end against the simulator and Azurite."""

from __future__ import annotations

from datetime import timedelta

import pytest
from azure.functions.timer import TimerRequest

from connector.errors import ConfigError, GraphPermissionError
from connector.simulator import generate_traffic
from tests.integration.queue_host import load_function_app

pytestmark = pytest.mark.integration


def timer_function(module):
    (function,) = [
        f for f in module.app.get_functions() if any(b.type == "timerTrigger" for b in f.get_bindings())
    ]
    return function


@pytest.fixture
def environment(monkeypatch, connector_env):
    for name, value in connector_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TIMER_SCHEDULE", raising=False)
    return connector_env


def test_timer_is_registered_every_five_minutes_with_the_monitor_on(environment):
    function = timer_function(load_function_app())

    (trigger,) = [b for b in function.get_bindings() if b.type == "timerTrigger"]
    assert trigger.schedule == "0 */5 * * * *"
    assert trigger.use_monitor is True
    assert trigger.run_on_startup is False


def test_schedule_comes_from_the_timer_schedule_setting(environment, monkeypatch):
    monkeypatch.setenv("TIMER_SCHEDULE", "0 */15 * * * *")

    function = timer_function(load_function_app())

    (trigger,) = [b for b in function.get_bindings() if b.type == "timerTrigger"]
    assert trigger.schedule == "0 */15 * * * *"


def test_timer_run_ingests_new_mail_and_a_second_tick_adds_nothing(sim, environment):
    now = sim.now()
    sim.graph.add(
        generate_traffic(now - timedelta(hours=3), now - timedelta(minutes=5), messages=120, seed=5)
    )
    function = timer_function(load_function_app()).get_user_function()

    function(TimerRequest(past_due=False))
    first = len(sim.ingestion.rows())
    function(TimerRequest(past_due=True))

    assert first == len(sim.graph.rows()) > 120
    assert len(sim.ingestion.rows()) == first


def test_timer_run_raises_the_clear_error_so_the_invocation_fails(sim, environment):
    sim.graph.permission_granted = False
    function = timer_function(load_function_app()).get_user_function()

    with pytest.raises(GraphPermissionError, match="ExchangeMessageTrace.Read.All"):
        function(TimerRequest())


def test_missing_setting_fails_the_invocation_naming_it(sim, environment, monkeypatch):
    monkeypatch.delenv("DCR_IMMUTABLE_ID")
    function = timer_function(load_function_app()).get_user_function()

    with pytest.raises(ConfigError, match="setting DCR_IMMUTABLE_ID: is required"):
        function(TimerRequest())


def test_importing_the_function_app_reads_no_run_settings(monkeypatch):
    for name in ("TENANT_ID", "INGESTION_ENDPOINT", "DCR_IMMUTABLE_ID", "LOCAL_DOMAINS"):
        monkeypatch.delenv(name, raising=False)

    module = load_function_app()

    assert module.app is not None
