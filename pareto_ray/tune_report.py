"""What Ray Tune receives of each epoch: a ``TuneReportCallback`` that adds ``epochs`` (epochs done).

ASHA counts in ``epochs`` rather than Tune's ``training_iteration``: a restored trial resumes its Train run from
a checkpoint, so its first new report is not its first epoch.  The Train controller of every trial unpickles
the callback, importing this module: it imports Ray Tune only (no torch).
"""

from __future__ import annotations

from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback

#: ASHA's clock: epochs done, added to every result Tune receives.
EPOCHS = "epochs"


class EpochReportCallback(TuneReportCallback):
    """``TuneReportCallback`` with ``epochs`` (epochs done) added to every result."""

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if metrics and "epoch" in metrics[0]:
            metrics = [{**metrics[0], EPOCHS: int(metrics[0]["epoch"]) + 1}, *metrics[1:]]
        super().after_report(run_context, metrics, checkpoint)
