"""Training progress on the driver: each committed epoch once, with the time per epoch and an ETA.

Rank 0's report of an epoch reaches the Train controller, where ``EpochReporter`` (a Ray Train callback that
runs after ``tracking.EpochLogger``, so an epoch is shown once it is checkpointed and in MLflow) hands it to an
``EpochBoard``, a CPU-less actor of the driver's.  ``ProgressDisplay.track`` polls that board from a thread of
the driver: on a terminal a bar per run (the epoch lines above it), otherwise one plain line per epoch.  The
workers print nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.train import Checkpoint, UserCallback
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

#: Metrics an epoch line shows (rank 0's report has them all).
SHOWN = ("train_loss", "val_hv", "val_nondominated")


@ray.remote(num_cpus=0)
class EpochBoard:
    """Epoch events on their way from a Train controller to the driver."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def put(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def take(self) -> list[dict[str, Any]]:
        events, self.events = self.events, []
        return events


class EpochReporter(UserCallback):
    """Sends rank 0's report of each epoch to an ``EpochBoard``; runs in the Train controller."""

    def __init__(self, board: Any):
        self.board = board

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Checkpoint | None) -> None:
        report = metrics[0] if metrics else {}
        if "epoch" not in report or "val_hv" not in report:
            return
        # a restarted worker group first reports its checkpoint's epoch again, naming that checkpoint (worker.py)
        event = {"epoch": int(report["epoch"]), "restored": "checkpoint_path" in report,
                 **{k: float(report[k]) for k in SHOWN if k in report}}
        try:
            ray.get(self.board.put.remote(event), timeout=10)
        except ray.exceptions.RayError:
            pass  # the driver's display is gone; training goes on without it


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


@dataclass
class RunProgress:
    """One run's epochs as the driver sees them: what to print, the time per epoch and the ETA."""

    name: str
    epochs: int
    started: float = field(default_factory=time.monotonic)
    done: int = 0  # epochs completed (a resumed run starts at its checkpoint's)
    trained: list[float] = field(default_factory=list)  # arrival times of the epochs trained by this run
    warm: bool = False  # whether ``started`` is past the workers' start-up (a resumed run's restored epoch)

    def seconds_per_epoch(self) -> float | None:
        """The mean time between epochs; none before the second (the first one's includes the start-up)."""
        if len(self.trained) >= 2:
            return (self.trained[-1] - self.trained[0]) / (len(self.trained) - 1)
        if self.trained and self.warm:
            return self.trained[0] - self.started
        return None

    def eta(self, now: float) -> float | None:
        """Seconds left: the epochs to go at the time per epoch, less the time since the last one."""
        per = self.seconds_per_epoch()
        if per is None:
            return None
        return max(0.0, per * (self.epochs - self.done) - (now - self.trained[-1]))

    def update(self, event: dict[str, Any], now: float | None = None) -> str:
        """Record one epoch event; its line."""
        now = time.monotonic() if now is None else now
        self.done = int(event["epoch"]) + 1
        scores = f"val_hv {event['val_hv']:.4f}"
        if "val_nondominated" in event:
            scores += f"  non-dominated {int(event['val_nondominated'])}"
        if event.get("restored"):
            self.started, self.warm = now, True
            return f"[{self.name}] resumed after epoch {self.done}/{self.epochs}  {scores}"
        self.trained.append(now)
        loss = f"train_loss {event['train_loss']:.4f}  " if "train_loss" in event else ""
        line = f"[{self.name}] epoch {self.done}/{self.epochs}  {loss}{scores}"
        per = self.seconds_per_epoch()
        timing = f"{per:.1f} s/epoch" if per is not None else f"{_clock(now - self.started)} with start-up"
        if self.done >= self.epochs:
            return f"{line}  {timing}  done in {_clock(now - self.started)}"
        return f"{line}  {timing}" + (f"  ETA {_clock(self.eta(now))}" if per is not None else "")

    def status(self, now: float) -> str:
        eta = self.eta(now)
        return f"waiting for epoch {self.done + 1}" if eta is None else f"ETA {_clock(eta)}"


class ProgressDisplay:
    """Shows the epochs of the runs it tracks on ``console``: a bar per run with its ETA on a terminal, else one
    line per epoch.  Use as a context manager around the training; ``track`` each run."""

    def __init__(self, console: Console, poll_s: float = 0.5):
        self.console, self.poll_s = console, poll_s
        self.bars: Progress | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.console.is_terminal:
            self.bars = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[status]}"), console=self.console)
            self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bars is not None:
            self.bars.stop()
            self.bars = None

    @contextmanager
    def track(self, name: str, epochs: int) -> Iterator[EpochReporter]:
        """The callback for run ``name``'s trainer; its epochs are shown until the block ends."""
        board = EpochBoard.remote()
        run = RunProgress(name, epochs)
        task = self.bars.add_task(name, total=epochs, status=run.status(time.monotonic())) if self.bars else None
        stop = threading.Event()
        poller = threading.Thread(target=self._poll, args=(board, run, task, stop), daemon=True,
                                  name=f"progress-{name}")
        poller.start()
        try:
            yield EpochReporter(board)
        finally:
            stop.set()
            poller.join()
            self._take(board, run, task)  # what arrived since the last poll
            ray.kill(board)

    def _poll(self, board: Any, run: RunProgress, task: TaskID | None, stop: threading.Event) -> None:
        while not stop.wait(self.poll_s) and self._take(board, run, task):
            pass

    def _take(self, board: Any, run: RunProgress, task: TaskID | None) -> bool:
        """Show the board's new events; False once the board cannot be reached (the run's failure says why)."""
        try:
            events = ray.get(board.take.remote(), timeout=10)
        except ray.exceptions.RayError:
            return False
        self._show(events, run, task)
        return True

    def _show(self, events: list[dict[str, Any]], run: RunProgress, task: TaskID | None) -> None:
        for event in events:
            line = run.update(event)
            (self.bars.console if self.bars else self.console).print(line, soft_wrap=True, markup=False,
                                                                     highlight=False)
        if self.bars is not None and task is not None:
            self.bars.update(task, completed=run.done, status=run.status(time.monotonic()))
