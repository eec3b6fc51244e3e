"""Tuning records shared through S3, as one job sees them: pull before the compile, push after it.

Invariants: nothing happens unless ``[neo] tuning_database`` is an ``s3://`` URL; the local mirror
is marked as one before any S3 call (so records tuned while S3 is out of reach wait in its outbox
for a later push); a pull or push that fails is logged and the job goes on with the mirror as it
is; the S3 client is made only when a sync runs. The sync itself is
:class:`~airflow_neo.local.shared.SharedTuningDatabase`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from airflow_neo.local.settings import CompileSettings

__all__ = ["TuningSync"]


class TuningSync:
    """Pull/push of the shared tuning database for one job.

    :param settings: the job's compile settings, resolved (``tuning_mirror`` set for S3).
    :param s3_client: returns the job's S3 client.
    :param log: the job's logger.
    :param timings: the job's phase timings (``tuning pull``/``tuning push`` are added).
    """

    def __init__(self, settings: CompileSettings, s3_client: Callable[[], Any], log: logging.Logger,
                 timings: dict[str, float]):
        self.settings, self.s3_client, self.log, self.timings = settings, s3_client, log, timings

    def pull(self) -> None:
        """Bring the shared tuning records into the local mirror."""
        self._sync("pull")

    def push(self) -> None:
        """Send the records this job tuned to S3."""
        self._sync("push")

    def _sync(self, direction: str) -> None:
        url = self.settings.tuning_remote
        if not url:
            return
        from airflow_neo.local.shared import SharedTuningDatabase, prepare_mirror

        mirror = self.settings.tuning_mirror
        started = time.monotonic()
        try:
            prepare_mirror(mirror, url)
            shared = SharedTuningDatabase(url, mirror, self.s3_client(), log=self.log.warning)
            report = shared.pull() if direction == "pull" else shared.push()
        except Exception as err:
            self.log.warning(
                "tuning records: could not %s %s (%s: %s); going on with the local mirror %s",
                direction, url, type(err).__name__, err, mirror,
            )
            return
        elapsed = time.monotonic() - started
        self.timings[f"tuning {direction}"] = elapsed
        self.log.info(
            "tuning records: %s %s in %.2f s (%s)", direction, url, elapsed,
            ", ".join(f"{key} {value}" for key, value in report.items()),
        )
