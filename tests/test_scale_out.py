"""Scale-out and fault tolerance, on this machine only (loopback): Hydra launchers (joblib,
Ray), Optuna workers sharing a storage, killed runs and killed workers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from gps.report.document import write_atomic
from gps.report.sweep import find_runs
from gps.tune import storage_of

GPS = [sys.executable, "-c", "from gps.app import main; main()"]
TUNE = [sys.executable, "-c", "import sys; from gps.tune import main; sys.exit(main())"]
TINY = ["workload.seq_len=256", "evaluation.train_batches=3", "evaluation.test_batches=2",
        "predictor=fast", "report=minimal", "strategy.ilp=false"]  # fmt: skip
GRID = "workload.batch_size=1,2"
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 makes Ray resolve this node to 127.0.0.1 (its desktop
# mode) instead of the machine's network address: the whole Ray test stays on loopback, where
# the token authentication of Ray >= 2.5x (RAY_AUTH_MODE) is not needed.
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1",
       "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled"}  # fmt: skip


def _sweep(sweep: Path, *launcher: str, env: dict | None = None) -> dict[str, float]:
    """Run the tiny 2-point grid with ``launcher`` overrides; return {overrides: e2e seconds of
    every strategy} read back from the runs' results.json."""
    proc = subprocess.run(
        [*GPS, "-m", *TINY, GRID, *launcher, f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, timeout=300, env=env or ENV,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = find_runs(sweep)
    assert [r.status for r in runs] == ["ok", "ok"], [(r.path, r.error) for r in runs]
    return {
        f"{' '.join(r.overrides)}|{s['name']}": s["e2e_time_s"]
        for r in runs for s in r.results["strategies"]
    }  # fmt: skip


@pytest.fixture(scope="module")
def basic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    return _sweep(tmp_path_factory.mktemp("basic"))


def test_joblib_launcher_two_workers_same_results(tmp_path: Path, basic: dict) -> None:
    got = _sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    assert got == basic


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_launcher_local_cluster_same_results(tmp_path: Path, basic: dict) -> None:
    ray = Path(sys.executable).with_name("ray")
    if not ray.exists():
        pytest.skip("ray not installed (pip install -e '.[ray]')")
    port = _free_port()
    start = [ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
             "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"]  # fmt: skip
    subprocess.run(start, check=True, capture_output=True, timeout=120, env=ENV)
    try:
        env = {**ENV, "RAY_ADDRESS": f"127.0.0.1:{port}"}
        got = _sweep(tmp_path, "hydra/launcher=ray", env=env)
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120, env=ENV)
    assert got == basic


# Worker scripts: ``gps-tune`` with one hook in the objective, so that what the tests need to
# happen happens at a known point of a trial, not at whatever moment a clock or the scheduler
# of a loaded machine picks.
_BARRIER_WORKER = """
import os, sys, time
from pathlib import Path
import gps.tune as tune

barrier = Path(sys.argv[1])
price = tune.Objective.__call__

def meet_first(self, trial):
    # each worker's first trial waits until the other worker has a trial of its own running
    if not getattr(self, "met", False):
        (barrier / str(os.getpid())).touch()
        deadline = time.monotonic() + 240  # a safety net only: the other worker never came
        while len(list(barrier.iterdir())) < 2:
            if time.monotonic() > deadline:
                sys.exit("the other worker never started a trial")
            time.sleep(0.05)
        self.met = True
    return price(self, trial)

tune.Objective.__call__ = meet_first
sys.exit(tune.main(sys.argv[2:]))
"""

_DYING_WORKER = """
import os, signal, sys
import gps.tune as tune

price, calls = tune.Objective.__call__, []

def die_in_third_trial(self, trial):
    calls.append(trial.number)
    if len(calls) == 3:  # killed mid-trial: the trial is named (host, pid) and running
        os.kill(os.getpid(), signal.SIGKILL)
    return price(self, trial)

tune.Objective.__call__ = die_in_third_trial
sys.exit(tune.main(sys.argv[1:]))
"""


def test_two_tune_workers_share_one_study(tmp_path: Path) -> None:
    """Two workers on one journal study finish exactly ``n`` trials between them, both doing
    some: each worker's first trial waits until the other has started one (no dependence on
    which process the machine runs first)."""
    url, n = f"journal:{tmp_path}/study.log", 8
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    args = ["--trials", str(n), "--study", "s", "--storage", url, *TINY, "workload.batch_size=1"]
    workers = [subprocess.Popen([sys.executable, "-c", _BARRIER_WORKER, str(barrier), *args],
                                env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]  # fmt: skip
    for w in workers:
        _, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name="s", storage=storage_of(url))
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == n
    pids = {w.pid for w in workers}
    assert {t.user_attrs["pid"] for t in complete} == pids  # both workers did trials
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))


def test_killed_tune_worker_leaves_a_resumable_study(tmp_path: Path) -> None:
    """A worker killed in the middle of its third trial leaves a loadable study with two
    complete trials and one running trial of a dead process; a rerun fails that trial and
    completes the study to exactly ``n``."""
    url = f"journal:{tmp_path}/study.log"
    args = ["--study", "k", "--storage", url, *TINY, "workload.batch_size=1"]
    worker = subprocess.Popen([sys.executable, "-c", _DYING_WORKER, "--trials", "1000", *args],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)  # fmt: skip
    _, err = worker.communicate(timeout=300)
    assert worker.returncode == -signal.SIGKILL, err[-2000:]
    killed = optuna.load_study(study_name="k", storage=storage_of(url))  # still loadable
    assert len(killed.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 2
    [orphan] = killed.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    assert {t.user_attrs["pid"] for t in killed.get_trials()} == {worker.pid}
    n = 5
    resume = subprocess.run([*TUNE, "--trials", str(n), *args], env=ENV, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert resume.returncode == 0, resume.stderr[-2000:]
    study = optuna.load_study(study_name="k", storage=storage_of(url))
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == n
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))  # stale one failed
    [failed] = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert failed.number == orphan.number


def test_run_killed_before_writing_counts_as_missing(tmp_path: Path) -> None:
    run = tmp_path / "sweep" / "0"
    proc = subprocess.Popen([*GPS, f"hydra.run.dir={run}"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while not (run / ".hydra" / "config.yaml").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (run / "results.json").exists()
    [found] = find_runs(tmp_path / "sweep")
    assert found.status == "missing"


def test_write_interrupted_midway_leaves_no_result(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    real = Path.write_text

    def half_then_crash(self: Path, text: str, *args, **kwargs) -> int:
        real(self, text[: len(text) // 2])
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(Path, "write_text", half_then_crash)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "0" / "results.json", json.dumps({"strategies": []}))
    monkeypatch.undo()
    assert not (tmp_path / "0" / "results.json").exists()
    [found] = find_runs(tmp_path)
    assert found.status == "missing"
