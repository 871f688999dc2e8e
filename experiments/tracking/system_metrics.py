"""MLflow's system metrics monitor, kept alive through a store outage.

MLflow's `SystemMetricsMonitor` thread quits at its first failed request, so a store outage
longer than one request's retries would end the run's system metrics for good.
`KeptSystemMetrics` runs MLflow's own loop (`monitor`) again once the store answers and the
run is still RUNNING, the steps going on where they stopped (a batch that failed to log goes
with the next one). What of MLflow it relies on: docs/internals.md (Internals table).
"""

from __future__ import annotations

import logging
import threading

from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

#: MLflow's warnings when its loop quits on a failed request: the restart makes them moot
_QUIT_WARNINGS = ("Failed to get mlflow run", "Failed to log system metrics")
_LOGGER = "mlflow.system_metrics.system_metrics_monitor"


class _QuietQuits(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_QUIT_WARNINGS)


class KeptSystemMetrics(SystemMetricsMonitor):
    """`SystemMetricsMonitor` whose loop is run again after a failed request, until
    `finish()` or until the run is no longer RUNNING."""

    def __init__(self, run_id: str, *, tracking_uri: str, **kwargs) -> None:
        super().__init__(run_id, tracking_uri=tracking_uri, **kwargs)
        self.kept_run_id, self.kept_uri = run_id, tracking_uri
        self.stopping = threading.Event()
        self.restarts = 0  # how many times the loop was run again

    def finish(self) -> None:
        self.stopping.set()
        super().finish()

    def monitor(self) -> None:
        quiet = _QuietQuits()
        logging.getLogger(_LOGGER).addFilter(quiet)
        try:
            while True:
                super().monitor()
                if not self._still_running():
                    return
                self.restarts += 1
        finally:
            logging.getLogger(_LOGGER).removeFilter(quiet)

    def _still_running(self) -> bool:
        """After MLflow's loop returned: False once stopped or the run ended; True once the
        store answers with the run still RUNNING (asked again every sampling interval)."""
        from mlflow.tracking.client import MlflowClient

        while not self.stopping.is_set():
            try:
                status = MlflowClient(self.kept_uri).get_run(self.kept_run_id).info.status
            except Exception:  # the store still does not answer: ask again
                self.stopping.wait(self.sampling_interval)
                continue
            return status == "RUNNING"
        return False
