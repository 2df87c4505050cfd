"""What a user reads while training: each epoch once, with an ETA; Ray Train's per-report lines only with --verbose."""

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, tiny_overrides
from rich.console import Console

from pareto_ray.config import load_config
from pareto_ray.progress import ProgressDisplay, RunProgress
from pareto_ray.training.continuous import build_trainer

EPOCH = {"train_loss": 1.5, "val_hv": 0.61, "val_nondominated": 3.0}


def test_epoch_lines_time_per_epoch_and_eta():
    run = RunProgress("r", epochs=4, started=0.0)
    assert run.status(5.0) == "waiting for epoch 1"
    # the first epoch's time includes the workers' start-up: no ETA from it; from the second on, epochs are timed
    assert run.update({"epoch": 0, **EPOCH}, now=20.0) == ("[r] epoch 1/4  train_loss 1.5000  val_hv 0.6100  "
                                                          "non-dominated 3  0:20 with start-up")
    assert run.status(22.0) == "waiting for epoch 2"
    assert run.update({"epoch": 1, **EPOCH}, now=25.0).endswith("5.0 s/epoch  ETA 0:10")
    assert run.status(29.0) == "ETA 0:06"  # counts down between epochs
    assert run.update({"epoch": 3, **EPOCH}, now=35.0).endswith("7.5 s/epoch  done in 0:35")


def test_a_resumed_run_shows_its_restored_epoch_once_then_times_from_there():
    run = RunProgress("r", epochs=10, started=0.0)
    assert run.update({"epoch": 5, "restored": True, **EPOCH}, now=30.0) == ("[r] resumed after epoch 6/10  "
                                                                             "val_hv 0.6100  non-dominated 3")
    assert run.update({"epoch": 6, **EPOCH}, now=36.0).endswith("6.0 s/epoch  ETA 0:18")


@pytest.mark.parametrize("terminal", [False, True])
def test_display_shows_each_reported_epoch_once(ray_session, terminal):
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=100)
    with ProgressDisplay(console, poll_s=0.05) as display:
        with display.track("tiny", epochs=2) as reporter:
            for epoch in range(2):  # what the Train controller calls after each report (rank 0's first)
                reporter.after_report(None, [{**EPOCH, "epoch": epoch}, {"train_loss": 1.5, "epoch": epoch}], None)
            reporter.after_report(None, [{"train_loss": 1.0, "epoch": 1}], None)  # no val_hv: not rank 0's epoch
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())  # the bar's control sequences
    assert text.count("[tiny] epoch 1/2") == 1 and text.count("[tiny] epoch 2/2") == 1, text
    assert "done in" in text


def test_ray_train_logs_warnings_only_unless_verbose(tmp_path):
    cfg = load_config("jobs/configs/quickstart.yaml", [f"ray.storage_path={tmp_path}", "name=quiet"])
    for verbose, level in ((False, "WARNING"), (True, "INFO")):
        trainer = build_trainer(cfg, f"sqlite:///{tmp_path}/mlflow.db", "run", verbose=verbose)
        assert trainer.run_config.logging_config.log_level == level
        assert trainer.train_loop_config["verbose"] is verbose  # the workers log every report only when verbose


@pytest.mark.slow
def test_a_piped_train_run_prints_each_epoch_once_and_paths_whole(tmp_path, mlflow_uri):
    """The real CLI, as ``make run`` runs it but piped and tiny: every line it prints is accounted for."""
    sets = tiny_overrides(tmp_path, mlflow_uri, name="piped", **{"mlflow.register_model": "null"})
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "pareto_ray", "train", "--config",
                           str(REPO / "jobs/configs/quickstart.yaml"), *sum((["--set", s] for s in sets), [])],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    lines = text.splitlines()
    for epoch in (1, 2):
        assert sum(f"[piped] epoch {epoch}/2 " in line for line in lines) == 1, text
    for noise in ("Reporting training result", "Checkpoint successfully created", "PreemptionWatcher",
                  "Token authentication is enabled", "Started training worker group"):
        assert noise not in text, text
    checkpoint = next(line for line in lines if line.startswith("checkpoint: "))
    assert Path(checkpoint.removeprefix("checkpoint: ")).is_dir()  # the whole path on its line
    plot = next(line for line in lines if line.startswith("plot: "))
    assert Path(plot.removeprefix("plot: ")).is_file()
    assert len(lines) < 30, text


def test_the_train_controllers_callbacks_import_without_torch():
    """The Train controller unpickles EpochLogger, EpochReporter and a Tune trial's EpochReportCallback on every
    run, importing their modules: torch (and torchvision's torch._dynamo) there would add seconds to each start."""
    code = ("import sys; import pareto_ray.tracking, pareto_ray.progress, pareto_ray.tune_report; "
            "print(sorted(m for m in ('torch', 'torchvision', 'pareto_ray.config') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout
