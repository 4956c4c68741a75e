"""Azure Functions entry point (Python v2 model): a timer that runs the live feed, a queue that runs backfills.

Thin on purpose: settings are read and validated when each run starts, and all
logic lives in the ``connector`` package (``python -m connector run`` is the same
code path). A run that stops on an error raises, so the invocation shows as failed
in Application Insights; the next tick resumes from the checkpoint.

The queue trigger runs one slice of a backfill queued by ``backfill --on-azure``
(:func:`connector.runner.run_queued_slice`); a failure raises, so the host retries the
message and, after ``maxDequeueCount`` (host.json) deliveries, moves it to the poison queue.
"""

import logging

import azure.functions as func

from connector.runner import quiet_sdk_loggers, run_feed, run_queued_slice, settle_collector
from connector.settings import timer_schedule

app = func.FunctionApp()
logger = logging.getLogger("connector.function")
quiet_sdk_loggers()
settle_collector()


@app.timer_trigger(schedule=timer_schedule(), arg_name="timer", run_on_startup=False, use_monitor=True)
def message_trace_sync(timer: func.TimerRequest) -> None:
    """Copy new message trace records into EmailEvents_CL."""
    if timer.past_due:
        logger.warning("timer is past due; this run catches up from the checkpoint")
    report = run_feed()
    if report.error is not None:
        raise report.error


@app.queue_trigger(arg_name="message", queue_name="%BACKFILL_QUEUE%", connection="AzureWebJobsStorage")
def backfill_slice(message: func.QueueMessage) -> None:
    """Store one slice of a backfill queued on Azure; raise so the host retries (or poisons) it."""
    run_queued_slice(message.get_body(), attempt=message.dequeue_count or 1)
