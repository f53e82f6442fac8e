"""Coarse-to-fine random search: the report's three shrinking eta/lambda intervals.

The report (DD2424 assignment 3: k-layer networks with batch normalization)
searched eta and lambda by hand in three intervals, each drawn
around the best pairs of the previous one. `CoarseToFineOracle` does the same
inside KerasTuner: the search runs in `rounds`; each round draws its trials
log-uniformly in the round's box, and when every trial of the round has ended
the box shrinks around the round's best trials (`narrow`). Boxes, the round of
each trial and the draw count live in the oracle's saved state, so
`oracle.reload()` (resume after a kill) and distributed tuning keep working.

    round 1   eta in [0.01, 0.7]     lam in [1e-6, 0.1]      (the report's first box)
    round 2   narrow(round 1's box, round 1's results)
    round 3   narrow(round 2's box, round 2's results)

With a stopping rule (`tuning.pruning`), the oracle also judges each trial's
report after every epoch (`update_trial`) against the trials of its round,
and answers `STOPPED` to a hopeless one: KerasTuner's own hook for early
stopping, so it works alike in one process and through the chief's gRPC
service.

>>> oracle = CoarseToFineOracle(
...     objective=keras_tuner.Objective("val_accuracy", "max"), max_trials=50, rounds=3,
...     ranges={"eta": (0.01, 0.7), "lam": (1e-6, 0.1)}, seed=1)
>>> oracle.round_sizes
[17, 17, 16]
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Mapping, Sequence
from typing import Any

import keras_tuner
from keras_tuner.engine.trial import Trial, TrialStatus

from kbn import _compat
from kbn.errors import KbnError
from kbn.fileio import write_json
from tuning.boxes import narrow, split_trials
from tuning.finalists import Standing, plan, standings
from tuning.pruning import Asha, Median

# The report's first, coarse box: 0.01 < eta < 0.7 and 1e-6 < lambda < 0.1.
DEFAULT_RANGES = {"eta": (0.01, 0.7), "lam": (1e-6, 0.1)}

# Key of this oracle's entries in `Oracle.get_state()`; KerasTuner owns the others.
_STATE_KEY = "coarse_to_fine"


class CoarseToFineOracle(keras_tuner.Oracle):
    """Random search in rounds whose log-uniform boxes shrink around the best trials.

    Round `r` (1-based) creates `round_sizes[r - 1]` trials (`max_trials` split
    as evenly as possible, earlier rounds taking the remainder). Each trial
    draws every hyper-parameter of `ranges` as `10 ** U(log10(low),
    log10(high))` inside the round's box; all other hyper-parameters of the
    search space are drawn by KerasTuner's own `_random_values`. Once a round
    has created its quota the oracle answers `IDLE` until all of the round's
    trials have ended (completed or failed, retries included), so the next box
    sees the round's complete results; then it narrows the box with
    `narrow(box, results, top_fraction, margin, objective.direction)`:

        [lo', hi'] = 10 ** [max(log10 lo, a - margin * S), min(log10 hi, b + margin * S)]

    per name, where `a`, `b` are the min and max log10 values of the round's
    best `max(2, ceil(top_fraction * n))` of its `n` completed trials and `S =
    log10(hi / lo)` (with pruning, stopped trials count too, ranked below the
    trials that got further; see `_narrowing_results`). After the last round
    the oracle answers `STOPPED`.

    The draws of trial `i` come from a generator seeded with `(seed, i)`, so
    one seed gives the same trials, and a reloaded oracle continues the same
    sequence. Boxes, each round's trial ids and the draw count are part of
    `get_state()`: `save()` then `reload()` resumes the search where it was.
    Trials that were running when the search was killed go back to
    KerasTuner's retry queue with their ids and values and still count for
    their round.

    Args:
        objective: A string, `keras_tuner.Objective` or list of them, as for
            `keras_tuner.Oracle`; its direction decides which trials are best.
        max_trials: int >= 1, the trials of the whole search. Defaults to 50,
            the report's number of pairs.
        rounds: int, 1 <= rounds <= max_trials, the number of boxes. Defaults
            to 3, the report's three intervals.
        ranges: dict name -> (low, high), 0 < low < high, the first box of the
            hyper-parameters narrowed round by round. Defaults to the report's
            `{"eta": (0.01, 0.7), "lam": (1e-6, 0.1)}`.
        top_fraction: float in (0, 1], the fraction of a round's completed
            trials the next box is drawn around (at least 2). Defaults to 0.2.
        margin: float > 0, how far the next box reaches beyond the best
            trials on each side, as a fraction of the previous box's
            log-span. Defaults to 0.1: with 3 rounds of 17 trials on a
            quadratic objective in log space, the last box is a small part of
            the first one's log-area and holds the optimum most of the time;
            0.25 always holds it but leaves a box several times larger.
        seed: int, the random seed; None picks one (KerasTuner's rule), saved
            with the state.
        pruning: None, or a stopping rule of `tuning.pruning` (`Asha`,
            `Median`): a trial that reports its objective after each epoch
            (`update_trial(trial_id, metrics, step=epochs_run)`) is judged
            against the trials of its round that reached the same epoch, and
            a hopeless one gets back status `STOPPED`. It ends as a `STOPPED`
            trial scored by its last report: never retried, counted apart
            from failed ones, and ranked in the narrowing below the trials
            that got further.
        **kwargs: the other `keras_tuner.Oracle` arguments:
            `hyperparameters`, `allow_new_entries`, `tune_new_entries`,
            `max_retries_per_trial`, `max_consecutive_failed_trials`.

    Reference:
        Bergstra and Bengio, Random Search for Hyper-Parameter Optimization,
        JMLR 13, 2012.
    """

    def __init__(
        self,
        objective: str | keras_tuner.Objective | list[str | keras_tuner.Objective] | None = None,
        max_trials: int = 50,
        rounds: int = 3,
        ranges: dict[str, tuple[float, float]] | None = None,
        top_fraction: float = 0.2,
        margin: float = 0.1,
        seed: int | None = None,
        pruning: Asha | Median | None = None,
        finalists: int = 0,
        finalist_seeds: Sequence[int] = (),
        **kwargs,
    ) -> None:
        ranges = _checked_ranges(DEFAULT_RANGES if ranges is None else ranges)
        if isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1:
            raise KbnError(
                "CoarseToFineOracle needs an int max_trials >= 1. "
                f"Received: max_trials={max_trials!r}"
            )
        finalist_trials = finalists * len(finalist_seeds)
        if (
            isinstance(rounds, bool)
            or not isinstance(rounds, int)
            or not 1 <= rounds <= max_trials - finalist_trials
        ):
            raise KbnError(
                "CoarseToFineOracle needs an int 1 <= rounds <= max_trials (less the "
                f"finalists' trials). Received: rounds={rounds!r}, max_trials={max_trials}, "
                f"finalists={finalists}, finalist_seeds={list(finalist_seeds)}"
            )
        if not 0 < top_fraction <= 1:
            raise KbnError(
                "CoarseToFineOracle needs 0 < top_fraction <= 1. "
                f"Received: top_fraction={top_fraction!r}"
            )
        if not margin > 0:
            raise KbnError(f"CoarseToFineOracle needs margin > 0. Received: margin={margin!r}")
        super().__init__(objective=objective, max_trials=max_trials, seed=seed, **kwargs)
        if seed is not None:
            self.seed = seed  # KerasTuner takes seed 0 for "no seed" and draws one
        self.rounds = rounds
        self.ranges = ranges
        self.top_fraction = float(top_fraction)
        self.margin = float(margin)
        # The rounds' trials; the finalists' come after them (`tuning.finalists`).
        self.round_sizes = split_trials(max_trials - finalist_trials, rounds)
        self.finalists = finalists
        self.finalist_seeds = list(finalist_seeds)
        self._finalist_plan: list[dict[str, Any]] | None = None
        # One box per started round: dict name -> (low, high).
        self._boxes = [dict(ranges)]
        # The ids of the trials each started round has created, in order.
        self._round_trial_ids: list[list[str]] = [[]]
        self.pruning = pruning
        # trial id -> the epoch the rule stopped it at.
        self._stopped: dict[str, int] = {}
        # trial id -> the rungs it has passed: a retried trial that reports
        # a rung again is not judged against trials that came after it.
        self._passed: dict[str, list[int]] = {}
        self._defer_trial_save = False

    @property
    def current_round(self) -> int:
        """The 1-based number of the round now creating or awaiting trials."""
        return len(self._boxes)

    @property
    def boxes(self) -> list[dict[str, tuple[float, float]]]:
        """The boxes of the started rounds: a list of dicts name -> (low, high)."""
        return [dict(box) for box in self._boxes]

    def round_of(self, trial_id: str) -> int:
        """The 1-based round that created `trial_id`; KeyError for an unknown id."""
        for r, trial_ids in enumerate(self._round_trial_ids):
            if trial_id in trial_ids:
                return r + 1
        raise KeyError(f"No trial {trial_id!r} in this search.")

    def rounds_summary(self) -> list[dict[str, Any]]:
        """One dict per started round: its box, completed trials and best score.

        Returns:
            A list of `{"round": r, f"{name}_range": [low, high], ...,
            "trials": completed trials, "best": best score or None}`.
        """
        summary = []
        for r, (box, trial_ids) in enumerate(zip(self._boxes, self._round_trial_ids)):
            scores = [score for _, score in self._completed_results(trial_ids)]
            finite = [s for s in scores if s is not None and math.isfinite(s)]
            best = None
            if finite:
                best = float(max(finite) if self.objective.direction == "max" else min(finite))
            row: dict[str, Any] = {"round": r + 1}
            row.update({f"{name}_range": [low, high] for name, (low, high) in box.items()})
            row.update({"trials": len(scores), "best": best})
            row["stopped"] = sum(1 for tid in trial_ids if tid in self._stopped)
            summary.append(row)
        return summary

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        """Draws the next trial in the current box, waits, narrows or stops.

        Args:
            trial_id: A string, the ID for this Trial.

        Returns:
            A dict with `"status"` (`"RUNNING"`, `"IDLE"` or `"STOPPED"`) and
            `"values"` (the trial's values when running, else None).
        """
        while True:
            r = len(self._boxes) - 1
            trial_ids = self._round_trial_ids[r]
            if len(trial_ids) < self.round_sizes[r]:
                values = self._draw_values(self._boxes[r])
                if values is None:  # KerasTuner's space of the other hps is exhausted.
                    return {"status": TrialStatus.STOPPED, "values": None}
                # `create_trial` records every RUNNING answer under `trial_id`.
                trial_ids.append(trial_id)
                # In the values, the round reaches workers too (and their HParams).
                values["round"] = r + 1
                return {"status": TrialStatus.RUNNING, "values": values}
            if not self._round_ended(trial_ids):
                # The next box needs the whole round; KerasTuner asks again
                # (workers poll the chief in distributed mode).
                return {"status": TrialStatus.IDLE, "values": None}
            if r + 1 == self.rounds:
                return self._next_finalist(trial_id)
            box = narrow(
                self._boxes[r],
                self._narrowing_results(trial_ids),
                self.top_fraction,
                self.margin,
                self.objective.direction,
            )
            self._boxes.append(box)
            self._round_trial_ids.append([])
            if self.verbose and self.verbose >= 1:
                ranges = ", ".join(f"{n} in [{lo:.3g}, {hi:.3g}]" for n, (lo, hi) in box.items())
                print(f"Round {r + 2} of {self.rounds}: {ranges}")

    def _next_finalist(self, trial_id):
        """populate_space's answer once the rounds have ended: the next finalist, or the end."""
        if not self.finalists:
            return {"status": TrialStatus.STOPPED, "values": None}
        if self._finalist_plan is None:
            rounds_ids = [tid for ids in self._round_trial_ids for tid in ids]
            results = [
                (tid, values, score)
                for tid, (values, score) in zip(rounds_ids, self._results_by_id(rounds_ids))
                if score is not None
            ]
            self._finalist_plan = plan(
                results,
                self.finalists,
                self.finalist_seeds,
                self.rounds + 1,
                self.objective.direction == "max",
            )
            self._round_trial_ids.append([])  # the finalists' round: no box, not narrowed
        ids = self._round_trial_ids[self.rounds]
        if len(ids) < len(self._finalist_plan):
            ids.append(trial_id)
            values = dict(self._finalist_plan[len(ids) - 1])
            return {"status": TrialStatus.RUNNING, "values": values}
        if not self._round_ended(ids):
            return {"status": TrialStatus.IDLE, "values": None}
        return {"status": TrialStatus.STOPPED, "values": None}

    def finalist_standings(self) -> list[Standing]:
        """The finalist pairs' means and standard errors, the winner first; [] without finalists."""
        if len(self._round_trial_ids) <= self.rounds:
            return []
        ids = self._round_trial_ids[self.rounds]
        runs = [
            (self.trials[tid].hyperparameters.values, score)
            for tid, (_, score) in zip(ids, self._results_by_id(ids))
        ]
        sources = {str(values["finalist_of"]) for values, _ in runs}
        search_scores = {
            tid: score for tid, (_, score) in zip(sources, self._results_by_id(sources))
        }
        return standings(runs, search_scores, self.objective.direction == "max")

    def _results_by_id(self, trial_ids):
        """(values, score) of each trial in `trial_ids`; score None unless it completed."""
        out = []
        for tid in trial_ids:
            trial = self.trials.get(tid)
            done = trial is not None and trial.status == TrialStatus.COMPLETED
            out.append(
                (trial.hyperparameters.values if trial else {}, trial.score if done else None)
            )
        return out

    @keras_tuner.synchronized
    def update_trial(self, trial_id: str, metrics: Mapping[str, float], step: int = 0) -> Trial:
        """Records a trial's report; answers `STOPPED` when the pruning rule stops it.

        Args:
            trial_id: A string, a running trial's id.
            metrics: dict metric name -> value, holding the objective.
            step: int, the epochs the trial has run.

        Returns:
            The `Trial`; its status is `STOPPED` when it should end now.
        """
        # KerasTuner saves trial.json at every report: 10 writes a trial that
        # only the reports at rungs need (the pruning rule compares those);
        # `end_trial` saves the whole history.
        self._defer_trial_save = True
        try:
            trial = super().update_trial(trial_id, metrics, step=step)
        finally:
            self._defer_trial_save = False
        if self.pruning is None or step not in self.pruning.rungs:
            if trial_id in self._stopped:
                trial.status = TrialStatus.STOPPED
            return trial
        self._save_trial(trial)
        if trial_id not in self._stopped and self._should_stop(trial_id, step):
            self._stopped[trial_id] = step
            self.save()
        if trial_id in self._stopped:
            trial.status = TrialStatus.STOPPED
        return trial

    @keras_tuner.synchronized
    def end_trial(self, trial: Trial) -> None:
        """KerasTuner's `end_trial`; a trial the rule stopped ends as `STOPPED`."""
        super().end_trial(trial)
        ended = self.trials[trial.trial_id]
        if trial.trial_id in self._stopped and ended.status == TrialStatus.COMPLETED:
            ended.status = TrialStatus.STOPPED
            self._save_trial(ended)
            self.save()

    def score_trial(self, trial: Trial) -> None:
        """A trial's score is its last report: the model it ends with, not its best epoch."""
        name = self.objective.name
        if trial.metrics.exists(name) and trial.metrics.get_history(name):
            last = trial.metrics.get_history(name)[-1]
            trial.score, trial.best_step = float(last.mean()), last.step
        else:
            super().score_trial(trial)

    @keras_tuner.synchronized
    def release(self, tuner_id: str) -> None:
        """Forget a worker that died; its running trial goes back to the queue.

        The next worker that asks for a trial gets it (and resumes it from its
        last backup); the chief stops waiting for the dead one.
        """
        trial = self.ongoing_trials.pop(tuner_id, None)
        if trial is not None and trial.trial_id not in _compat.oracle_retry_queue(self):
            _compat.oracle_retry_queue(self).append(trial.trial_id)
        self.tuner_ids.discard(tuner_id)
        self.save()

    @property
    def trials_stopped(self) -> dict[str, int]:
        """The ids of the trials the pruning rule stopped, with their epochs."""
        return dict(self._stopped)

    def _should_stop(self, trial_id, step):
        """The rule's verdict on `trial_id` at epoch `step`, each rung judged once."""
        if step not in self.pruning.rungs or step in self._passed.get(trial_id, ()):
            return False
        value = self._value_at(trial_id, step)
        if value is None:
            return False
        try:
            round_number = self.round_of(trial_id)
        except KeyError:
            return False
        if round_number > self.rounds:  # a finalist runs to its end: its mean is the estimate
            return False
        round_ids = self._round_trial_ids[round_number - 1]
        others = [self._value_at(tid, step) for tid in round_ids if tid != trial_id]
        others = [v for v in others if v is not None]
        sign = 1.0 if self.objective.direction == "max" else -1.0
        if self.pruning.should_stop(step, sign * value, [sign * v for v in others]):
            return True
        self._passed.setdefault(trial_id, []).append(step)
        return False

    def _value_at(self, trial_id, step):
        """The objective `trial_id` reported at `step`, or None (not reached, or not finite)."""
        trial = self.trials.get(trial_id)
        name = self.objective.name
        if trial is None or not trial.metrics.exists(name):
            return None
        for observation in trial.metrics.get_history(name):
            if observation.step == step:
                value = float(observation.mean())
                return value if math.isfinite(value) else None
        return None

    # KerasTuner writes its state files in place, so a kill mid-write leaves
    # a torn oracle.json or trial.json that breaks the next reload. kbn's are
    # written beside the target and renamed over it, whole or not at all.
    def save(self) -> None:
        write_json(_compat.oracle_state_file(self), self.get_state())

    def _save_trial(self, trial):  # KerasTuner's private hook (kbn._compat.OVERRIDDEN)
        if self._defer_trial_save:
            return
        write_json(
            os.path.join(_compat.oracle_trial_dir(self, trial.trial_id), "trial.json"),
            trial.get_state(),
        )

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state[_STATE_KEY] = {
            "max_trials": self.max_trials,
            "rounds": self.rounds,
            "ranges": {name: list(bounds) for name, bounds in self.ranges.items()},
            "boxes": [{name: list(bounds) for name, bounds in box.items()} for box in self._boxes],
            "round_trial_ids": [list(ids) for ids in self._round_trial_ids],
            "pruning": self.pruning.name if self.pruning else "none",
            "stopped": dict(self._stopped),
            "passed": {tid: list(rungs) for tid, rungs in self._passed.items()},
            "finalists": self.finalists,
            "finalist_seeds": list(self.finalist_seeds),
            "finalist_plan": self._finalist_plan,
        }
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        # A missing key raises KeyError, which `Oracle.reload` reports as an
        # existing project of another kind.
        ours = state[_STATE_KEY]
        pruning = self.pruning.name if self.pruning else "none"
        saved = (
            ours["max_trials"],
            ours["rounds"],
            _as_tuples(ours["ranges"]),
            ours.get("pruning", "none"),
            ours.get("finalists", 0),
            ours.get("finalist_seeds", []),
        )
        given = (
            self.max_trials,
            self.rounds,
            self.ranges,
            pruning,
            self.finalists,
            self.finalist_seeds,
        )
        if saved != given:
            names = ("max_trials", "rounds", "ranges", "pruning", "finalists", "finalist_seeds")
            raise KbnError(
                "A coarse-to-fine search resumes with the settings it started with. Received: "
                + ", ".join(f"{n}={v}" for n, v in zip(names, given))
                + "; saved: "
                + ", ".join(f"{n}={v}" for n, v in zip(names, saved))
            )
        self._boxes = [_as_tuples(box) for box in ours["boxes"]]
        self._round_trial_ids = [list(ids) for ids in ours["round_trial_ids"]]
        self._stopped = dict(ours.get("stopped", {}))
        self._passed = {tid: list(rungs) for tid, rungs in ours.get("passed", {}).items()}
        self._finalist_plan = ours.get("finalist_plan")

    def _draw_values(self, box):
        """Values for the next trial: KerasTuner's random draw, `box`'s names overridden."""
        values = _compat.oracle_random_values(self)
        if values is None:
            return None
        # Seeded by (seed, draw index), not by a running generator, so a
        # reloaded oracle needs only the count of draws to continue the sequence.
        draws = sum(len(ids) for ids in self._round_trial_ids)
        rng = random.Random(f"{self.seed}:{draws}")
        for name in sorted(box):
            low, high = box[name]
            value = 10 ** rng.uniform(math.log10(low), math.log10(high))
            values[name] = min(max(value, low), high)
        return values

    def _round_ended(self, trial_ids):
        # `end_order` holds the trials that will not run again: completed or
        # failed, not those waiting in the retry queue.
        ended = set(self.end_order)
        return all(trial_id in ended for trial_id in trial_ids)

    def _narrowing_results(self, trial_ids):
        """The round's results the next box is drawn around: `(values, score)` pairs.

        Without stopped trials, the completed ones with their scores. With
        pruning, stopped trials count too, ranked below every trial that got
        further (ASHA's own order: a trial promoted past a rung beat the
        trials stopped there) and by their score at their last rung among
        equals; the scores passed on are these ranks. Completed trials alone
        are few after pruning (docs/results.md, Pruning the search), and a box
        drawn around one or two of them collapses onto them.
        """
        if not any(tid in self._stopped for tid in trial_ids):
            return self._completed_results(trial_ids)
        sign = 1.0 if self.objective.direction == "max" else -1.0
        ranked = []
        for tid in trial_ids:
            trial = self.trials.get(tid)
            if trial is None or trial.status not in (TrialStatus.COMPLETED, TrialStatus.STOPPED):
                continue
            if trial.score is None or not math.isfinite(trial.score):
                continue
            reached = self._stopped.get(tid, math.inf)  # completed: every epoch
            ranked.append((reached, sign * trial.score, trial.hyperparameters.values))
        ranked.sort(key=lambda entry: entry[:2], reverse=True)
        # narrow() orders by score in the objective's direction: ranks as scores.
        n = len(ranked)
        return [(values, sign * float(n - i)) for i, (_, _, values) in enumerate(ranked)]

    def _completed_results(self, trial_ids):
        return [
            (self.trials[tid].hyperparameters.values, self.trials[tid].score)
            for tid in trial_ids
            if tid in self.trials and self.trials[tid].status == TrialStatus.COMPLETED
        ]


def _checked_ranges(ranges):
    """`ranges` as a dict name -> (float low, float high), or KbnError."""
    if not isinstance(ranges, dict) or not ranges:
        raise KbnError(
            "CoarseToFineOracle needs ranges as a non-empty dict name -> (low, high). "
            f"Received: ranges={ranges!r}"
        )
    checked = {}
    for name, bounds in ranges.items():
        try:
            low, high = (float(b) for b in bounds)
        except (TypeError, ValueError):
            raise KbnError(
                f"CoarseToFineOracle needs each range as (low, high). Received: {name}={bounds!r}"
            ) from None
        if not (0 < low < high and math.isfinite(high)):
            raise KbnError(
                "CoarseToFineOracle needs each range with 0 < low < high, finite "
                f"(it is searched in log scale). Received: {name}={bounds!r}"
            )
        checked[name] = (low, high)
    return checked


def _as_tuples(box):
    return {name: (float(low), float(high)) for name, (low, high) in box.items()}
