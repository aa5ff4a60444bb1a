"""``gps-tune``: Optuna search over the knobs a serving team controls, for minimum step time.

    gps-tune [--trials N] [--study NAME] [--storage URL] [--max-changed F] [--seed S] \
             [-- HYDRA_OVERRIDES ...]

Each trial picks a strategy and its knobs, prices it on the held-out batches of the
configured run (``conf/config.yaml`` + overrides, composed once) and reports the mean step
seconds. Trials whose capacity rule drops or reroutes more than ``--max-changed`` of the token
copies are infeasible (Optuna constraint, TPE sampler). Search space:

* ``replica_slots_per_gpu`` in 0..3 (extra slots for replicas);
* ``strategy``: ``eplb`` (``replan_interval`` 1..16, ``history_window`` 1..16),
  ``distribution`` (a predictor from ``predictor.distribution``; ``ewma`` alpha,
  ``window_mean`` window), ``capacity_drop`` / ``capacity_reroute`` (factor 1.0..2.0).

Storage: ``--storage journal:PATH`` (a journal file: several worker processes of one machine),
or an RDB URL (``sqlite:///study.db``; ``postgresql://...`` for many machines). Workers started
with the same ``--study`` and storage cooperate: each asks for trials until the study holds
``--trials`` finished ones, so a killed worker loses at most its trial in flight and a rerun
resumes. Optuna is used directly (not hydra-optuna-sweeper, which pins ``optuna<3``); see
``docs/advisor.md``.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import warnings
from collections.abc import Sequence
from datetime import datetime

import optuna
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from gps import cache
from gps.advisor import strategies as st
from gps.advisor.advise import build, engine_of, eval_data, ledger_of, slots_per_gpu
from gps.advisor.pricing import price_routed
from gps.app import CONF_DIR

HEARTBEAT_S, GRACE_S = 10, 30  # RDB storages: a worker silent this long has died
# A worker names itself on a trial (host, pid) as the trial's first act, milliseconds after
# Optuna creates it; a running trial still unnamed this long after its start was left by a
# worker killed in between (seconds).
ORPHAN_S = 2.0


def storage_of(url: str) -> optuna.storages.BaseStorage:
    """``journal:PATH`` -> a journal-file storage (one machine, several processes); anything
    else -> an RDB storage with heartbeats, so trials of a killed worker turn ``FAIL`` after
    ``GRACE_S`` seconds and are retried."""
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    with warnings.catch_warnings():  # heartbeats are marked experimental in Optuna 4/5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)


def fail_dead_local_trials(study: optuna.Study) -> int:
    """Mark ``FAIL`` the running trials whose worker ran on this host and no longer exists
    (what a killed worker leaves behind in a journal storage, which has no heartbeat), and the
    running trials no worker named within ``ORPHAN_S`` of their start (a worker killed between
    Optuna creating the trial and its first line). Returns how many."""
    host, n = socket.gethostname(), 0
    now = datetime.now()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if pid is None:
            if _young(t, now):
                continue
        elif t.user_attrs.get("host") != host or _alive(int(pid)):
            continue
        study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        n += 1
    return n


def _young(trial: optuna.trial.FrozenTrial, now: datetime) -> bool:
    """Whether ``trial`` started less than ``ORPHAN_S`` ago (unknown start: young)."""
    started = trial.datetime_start
    return started is None or (now - started).total_seconds() < ORPHAN_S


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Objective:
    """Prices one trial's strategy; the data (trace, batches) is prepared once per process."""

    def __init__(self, cfg: DictConfig, max_changed: float) -> None:
        self.cfg, self.max_changed = cfg, max_changed
        cache.configure_from(cfg)  # trials and workers share traces and fitted predictors
        self.spec, self.cluster, self.workload, trace_cfg = build(cfg)
        self.data = eval_data(cfg, trace_cfg, self.spec, self.workload)
        self.params = OmegaConf.to_container(cfg.predictor.params, resolve=True)

    def __call__(self, trial: optuna.Trial) -> float:
        s, spec, cluster = self.cfg.strategy, self.spec, self.cluster
        extra = trial.suggest_int("replica_slots_per_gpu", 0, 3)
        slots = slots_per_gpu(spec, cluster, extra)
        ledger = ledger_of(s, cluster, engine_of(self.cfg))
        ctx = st.Context(spec, cluster, self.workload, self.data, slots, ledger, s.replicas,
                         s.migration_source, s.horizon)  # fmt: skip
        kind = trial.suggest_categorical(
            "strategy", ["eplb", "distribution", "capacity_drop", "capacity_reroute"]
        )
        if kind == "eplb":
            routed = st.periodic(ctx, trial.suggest_int("replan_interval", 1, 16),
                                 trial.suggest_int("history_window", 1, 16))  # fmt: skip
        elif kind == "distribution":
            name = trial.suggest_categorical("predictor", list(self.cfg.predictor.distribution))
            params = dict(self.params.get(name, {}))
            if name == "ewma":
                params["alpha"] = trial.suggest_float("ewma_alpha", 0.05, 0.95)
            elif name == "window_mean":
                params["window"] = trial.suggest_int("window", 1, 32)
            routed = st.distribution(ctx, name, params)
        else:
            factor = trial.suggest_float("capacity_factor", 1.0, 2.0)
            routed = st.capacity(ctx, factor, kind.removeprefix("capacity_"))
        routed = st.scaled(routed, self.data.token_scale)
        cost = price_routed(routed, spec, cluster, self.workload, ledger)
        routed_copies = routed.sim.routed.sum(axis=-1)
        changed = float(((routed.sim.dropped + routed.sim.rerouted).sum(-1) / routed_copies).mean())
        trial.set_user_attr("changed_fraction", changed)
        trial.set_user_attr("name", routed.name)
        return float(cost.total_s.mean())


def tune(
    overrides: Sequence[str],
    *,
    trials: int,
    study_name: str,
    storage: str,
    max_changed: float,
    seed: int,
) -> optuna.Study:
    """Run (or resume) the study until it holds exactly ``trials`` complete trials; return it.

    Several processes may run this with the same ``study_name`` and ``storage`` at once: they
    share the work. Trials left running by a dead worker are failed (heartbeat for RDB
    storages, a process check on this host for journal files) and redone."""
    if trials < 1:
        raise ValueError(f"--trials must be >= 1, got {trials}")
    if not 0.0 <= max_changed <= 1.0:
        raise ValueError(f"--max-changed must be in [0, 1], got {max_changed}")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    objective = Objective(cfg, max_changed)
    study = optuna.create_study(
        study_name=study_name, storage=storage_of(storage), load_if_exists=True,
        direction="minimize",
        sampler=optuna.samplers.TPESampler(seed=seed),
    )  # fmt: skip
    study.set_user_attr("overrides", list(overrides))
    fail_dead_local_trials(study)
    complete = (optuna.trial.TrialState.COMPLETE,)

    def run_trial(trial: optuna.Trial) -> float:
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("max_changed", max_changed)
        # Exactly `trials` complete: trials finished or started earlier (lower number) by any
        # worker count first; a trial beyond them is pruned and this worker stops. A running
        # trial no worker has named yet counts while it is young (a live worker names it within
        # milliseconds: not counting it let two workers overshoot by one) and stops counting
        # once it is ORPHAN_S old (a worker killed before naming it; failed and redone).
        earlier = study.get_trials(deepcopy=False, states=(*complete, TrialState.RUNNING))
        now = datetime.now()
        ahead = sum(
            t.state == TrialState.COMPLETE
            or (t.number < trial.number and ("pid" in t.user_attrs or _young(t, now)))
            for t in earlier
        )
        if ahead >= trials:
            study.stop()
            raise optuna.TrialPruned(f"the study already has {trials} trials")
        value = objective(trial)
        # feasible when <= 0; the TPE sampler steers towards feasible trials
        trial.set_constraint("changed_fraction", trial.user_attrs["changed_fraction"] - max_changed)
        return value

    if len(study.get_trials(deepcopy=False, states=complete)) < trials:
        study.optimize(
            run_trial, show_progress_bar=sys.stderr.isatty(),
            callbacks=[optuna.study.MaxTrialsCallback(trials, states=complete)],
        )  # fmt: skip
    fail_dead_local_trials(study)  # orphans that reached ORPHAN_S during this run
    return study


def best_feasible(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The fastest finished trial that meets the quality constraint, or ``None``."""
    ok = [
        t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.user_attrs.get("changed_fraction", 1.0) <= t.user_attrs.get("max_changed", 0.0)
    ]  # fmt: skip
    return min(ok, key=lambda t: t.value) if ok else None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``gps-tune``; 0 on success, 2 on bad input."""
    parser = argparse.ArgumentParser(prog="gps-tune", description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=30, help="finished trials the study needs")
    parser.add_argument("--study", default="gps-tune", help="study name (shared by workers)")
    parser.add_argument(
        "--storage",
        default="sqlite:///reports/tune.db",
        help="journal:PATH or an RDB URL (default sqlite:///reports/tune.db)",
    )
    parser.add_argument(
        "--max-changed",
        type=float,
        default=0.01,
        help="max fraction of token copies dropped or rerouted (default 0.01)",
    )
    parser.add_argument("--seed", type=int, default=0, help="TPE sampler seed")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model=deepseek_v3")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.storage.startswith("sqlite:///"):
        from pathlib import Path

        Path(args.storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    try:
        study = tune(
            args.overrides, trials=args.trials, study_name=args.study, storage=args.storage,
            max_changed=args.max_changed, seed=args.seed,
        )  # fmt: skip
    except (ValueError, KeyError, OSError) as exc:
        print(f"gps-tune: error: {exc}", file=sys.stderr)
        return 2
    best = best_feasible(study)
    n = len(study.get_trials(deepcopy=False))
    if best is None:
        print(f"study {args.study}: {n} trials, none feasible (max changed {args.max_changed})")
        return 0
    print(f"study {args.study}: {n} trials; best feasible: {best.user_attrs['name']} "
          f"{best.value * 1e3:.3f} ms/step, params {best.params}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
