"""Azure Functions entry point (Python v2 model): a timer that runs the live feed.

Thin on purpose: settings are read and validated when each run starts, and all
logic lives in the ``connector`` package (``python -m connector run`` is the same
code path). A run that stops on an error raises, so the invocation shows as failed
in Application Insights; the next tick resumes from the checkpoint.
"""

import logging

import azure.functions as func

from connector.runner import quiet_sdk_loggers, run_feed
from connector.settings import timer_schedule

app = func.FunctionApp()
logger = logging.getLogger("connector.function")
quiet_sdk_loggers()


@app.timer_trigger(schedule=timer_schedule(), arg_name="timer", run_on_startup=False, use_monitor=True)
def message_trace_sync(timer: func.TimerRequest) -> None:
    """Copy new message trace records into EmailEvents_CL."""
    if timer.past_due:
        logger.warning("timer is past due; this run catches up from the checkpoint")
    report = run_feed()
    if report.error is not None:
        raise report.error
