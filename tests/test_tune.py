"""`gps-tune`: an Optuna study of a few trials, resumed from its storage; constraint; bad input."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from gps.tune import best_feasible, fail_dead_local_trials, main, storage_of, tune

TINY = ["workload.batch_size=1", "workload.seq_len=256", "evaluation.train_batches=3",
        "evaluation.test_batches=2", "predictor=fast"]  # fmt: skip


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_study_runs_and_resumes(tmp_path: Path, kind: str) -> None:
    url = f"sqlite:///{tmp_path}/s.db" if kind == "sqlite" else f"journal:{tmp_path}/s.log"
    first = tune(TINY, trials=3, study_name="t", storage=url, max_changed=0.01, seed=0)
    assert len(first.trials) == 3
    again = tune(TINY, trials=5, study_name="t", storage=url, max_changed=0.01, seed=0)
    assert len(again.trials) == 5  # resumed: 2 more, not 5 more
    loaded = optuna.load_study(study_name="t", storage=storage_of(url))
    assert len(loaded.trials) == 5
    for t in loaded.trials:
        assert t.value > 0 and 0 <= t.user_attrs["changed_fraction"] <= 1


def test_best_feasible_respects_the_quality_bound(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    study = tune(TINY, trials=6, study_name="q", storage=url, max_changed=0.0, seed=1)
    feasible = [t for t in study.trials if t.user_attrs["changed_fraction"] == 0.0]
    infeasible = [t for t in study.trials if t.user_attrs["changed_fraction"] > 0.0]
    best = best_feasible(study)
    if feasible:
        assert best is not None and best.value == min(t.value for t in feasible)
    else:
        assert best is None
    assert all(best is None or t.value != best.value or t in feasible for t in infeasible)


def test_cli_bad_input(tmp_path: Path, capsys) -> None:
    assert main(["--trials", "0", "--storage", f"sqlite:///{tmp_path}/x.db", *TINY]) == 2
    assert "--trials" in capsys.readouterr().err
    assert main(["--max-changed", "2", "--storage", f"sqlite:///{tmp_path}/x.db", *TINY]) == 2


def test_trial_orphaned_before_its_worker_named_it_is_failed_and_redone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed between Optuna creating a trial and the trial's first line leaves a
    running trial with no host/pid: it must not count towards ``--trials`` and is failed once
    older than ``ORPHAN_S``; a young unnamed trial (a live worker's) is left alone."""
    url = f"journal:{tmp_path}/s.log"
    tune(TINY, trials=1, study_name="o", storage=url, max_changed=0.01, seed=0)
    study = optuna.load_study(study_name="o", storage=storage_of(url))
    study.ask()  # RUNNING, unnamed: what the killed worker left
    assert fail_dead_local_trials(study) == 0  # younger than ORPHAN_S: maybe a live worker's
    monkeypatch.setattr("gps.tune.ORPHAN_S", 0.0)
    resumed = tune(TINY, trials=3, study_name="o", storage=url, max_changed=0.01, seed=0)
    states = [t.state for t in resumed.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3
    assert states.count(optuna.trial.TrialState.FAIL) == 1
    assert optuna.trial.TrialState.RUNNING not in states


def test_a_young_unnamed_trial_of_a_live_worker_counts_towards_trials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker's trial that Optuna created but the worker has not named yet is counted
    (not counting it let two workers finish ``--trials + 1``): with one trial complete and one
    such trial running, ``--trials 2`` needs no new trial."""
    monkeypatch.setattr("gps.tune.ORPHAN_S", 3600.0)  # the unnamed trial stays young
    url = f"journal:{tmp_path}/y.log"
    tune(TINY, trials=1, study_name="y", storage=url, max_changed=0.01, seed=0)
    study = optuna.load_study(study_name="y", storage=storage_of(url))
    study.ask()  # RUNNING, unnamed: a live worker between creating and naming it
    after = tune(TINY, trials=2, study_name="y", storage=url, max_changed=0.01, seed=0)
    states = [t.state for t in after.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 1
    assert states.count(optuna.trial.TrialState.RUNNING) == 1  # left alone, not failed
