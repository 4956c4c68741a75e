"""Azure Functions entry point (Python v2 model): a timer for the live feed, queues for tenants and backfills.

Thin on purpose: settings are read and validated when each run starts, and all
logic lives in the ``connector`` package (``python -m connector run`` is the same
code path). A run that stops on an error raises, so the invocation shows as failed
in Application Insights; the next tick resumes from the checkpoint.

With ``TENANTS`` set, the timer runs no feed itself: it enqueues one message per tenant
on ``TENANT_QUEUE`` and ``tenant_feed`` runs each tenant's live feed, so tenants run in
parallel instances and one tenant's failure is its own invocation's
(:func:`connector.runner.run_tenant_message`).

The backfill queue trigger runs one slice of a backfill queued by ``backfill --on-azure``
(:func:`connector.runner.run_queued_slice`); a failure raises, so the host retries the
message and, after ``maxDequeueCount`` (host.json) deliveries, moves it to the poison queue.
"""

import logging

import azure.functions as func

from connector.runner import (
    quiet_sdk_loggers,
    run_queued_slice,
    run_tenant_message,
    run_tick,
    settle_collector,
)
from connector.settings import timer_schedule

app = func.FunctionApp()
logger = logging.getLogger("connector.function")
quiet_sdk_loggers()
settle_collector()


@app.timer_trigger(schedule=timer_schedule(), arg_name="timer", run_on_startup=False, use_monitor=True)
def message_trace_sync(timer: func.TimerRequest) -> None:
    """Copy new message trace records into EmailEvents_CL (or enqueue each tenant's run of this tick)."""
    if timer.past_due:
        logger.warning("timer is past due; this run catches up from the checkpoint")
    run_tick()


@app.queue_trigger(arg_name="message", queue_name="%TENANT_QUEUE%", connection="AzureWebJobsStorage")
def tenant_feed(message: func.QueueMessage) -> None:
    """Run one tenant's live feed for a tick; raise only when the host's retry can help."""
    run_tenant_message(message.get_body(), attempt=message.dequeue_count or 1)


@app.queue_trigger(arg_name="message", queue_name="%BACKFILL_QUEUE%", connection="AzureWebJobsStorage")
def backfill_slice(message: func.QueueMessage) -> None:
    """Store one slice of a backfill queued on Azure; raise so the host retries (or poisons) it."""
    run_queued_slice(message.get_body(), attempt=message.dequeue_count or 1)
