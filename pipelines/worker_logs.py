"""What the CLI shows of the worker processes' logs under ``--direct_running_mode multi_processing``.

    quiet_worker_startup()     # once, after logging is configured (pipelines/extract.py main)

DirectRunner's multi-processing mode runs the DoFns in SDK worker subprocesses and relays their log records to the
console through one logger (``apache_beam.runners.portability.local_job_service``), each as a dump of the log
entry (``Worker: severity: WARN timestamp {...} message: "..." log_location: ...``). Two things went wrong there:

* every worker, at start-up, logs ``Discarding unparseable args: [...]`` listing every chatbeam option (and a few of
  Beam's own, e.g. ``--pipeline_type_check``) plus ``No semi_persistent_directory found``. The runner sends each
  worker the value of every option class registered in the launching process, and the worker parses and logs them
  before it has imported any of the pipeline's code — with only Beam's core option classes known, and a round trip
  that turns Beam's own ``--no_...`` flags into unknown ones. The cause is in Beam (apache/beam#29474 shows the
  same warning on Dataflow); nothing the pipeline does runs early enough in the worker to change it
  (``--beam_plugins`` are imported after that line). Both messages are harmless: they are dropped here.
* chatbeam's own progress lines (``chatbeam progress: ...``, INFO) are logged in the workers, where the records are
  counted, and the relay logged them at INFO, below the CLI's WARNING: a user saw nothing until the summary. They
  are re-logged on ``chatbeam.progress``, as the single-process run shows them.

Every other relayed record at WARNING or above passes unchanged. On Dataflow the workers' logs go to Cloud Logging,
not to the launching console; there the start-up warning remains (it is Beam's).
"""

from __future__ import annotations

import logging
import re

__all__ = ["RELAY_LOGGER", "WorkerLogFilter", "quiet_worker_startup"]

RELAY_LOGGER = "apache_beam.runners.portability.local_job_service"
HARMLESS = ("Discarding unparseable args", "No semi_persistent_directory found")
OURS = "chatbeam progress:"
_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')
_UNESCAPE = re.compile(r"\\(.)")


class WorkerLogFilter(logging.Filter):
    """On the relay logger: drop the harmless start-up warnings, re-log chatbeam's progress lines, keep the rest
    (WARNING and above; the relay's other INFO records stay hidden, as before)."""

    def __init__(self, progress_logger: logging.Logger | None = None) -> None:
        super().__init__()
        self._progress = progress_logger or logging.getLogger("chatbeam.progress")

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        match = _MESSAGE.search(text) if text.startswith("Worker: ") else None
        message = _UNESCAPE.sub(r"\1", match.group(1)) if match else ""
        if message.startswith(OURS):
            self._progress.info("%s", message)
            return False
        if message.startswith(HARMLESS):
            return False
        return record.levelno >= logging.WARNING


def quiet_worker_startup() -> None:
    """Install the filter on the relay logger (idempotent) and let its INFO records reach the filter."""
    relay = logging.getLogger(RELAY_LOGGER)
    if not any(isinstance(f, WorkerLogFilter) for f in relay.filters):
        relay.addFilter(WorkerLogFilter())
    if relay.getEffectiveLevel() > logging.INFO:
        relay.setLevel(logging.INFO)
