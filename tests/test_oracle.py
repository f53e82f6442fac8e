"""Tests for tuning/oracle.py: the coarse-to-fine oracle, driven like a tuner drives it.

No Keras training: each trial's score is a cheap function of its eta and lam,
the negative squared log-distance to (ETA_OPT, LAM_OPT), maximized.
"""

import json
import math
import pathlib

import keras_tuner
import pytest
from keras_tuner.engine.trial import TrialStatus

from tuning.boxes import narrow, split_trials
from tuning.oracle import CoarseToFineOracle

ETA_OPT = 0.08
LAM_OPT = 2e-4
RANGES = {"eta": (0.01, 0.7), "lam": (1e-6, 0.1)}
OBJECTIVE = keras_tuner.Objective("score", "max")


def fake_score(values):
    """Negative squared distance to the optimum in log10 space (max 0 at the optimum)."""
    return -(
        (math.log10(values["eta"]) - math.log10(ETA_OPT)) ** 2
        + (math.log10(values["lam"]) - math.log10(LAM_OPT)) ** 2
    )


def make_oracle(tmp_path, project="p", **kwargs):
    settings = dict(objective=OBJECTIVE, max_trials=30, rounds=3, ranges=RANGES, seed=7)
    settings.update(kwargs)
    oracle = CoarseToFineOracle(**settings)
    oracle._set_project_dir(tmp_path, project)  # what `BaseTuner.__init__` does
    oracle.verbose = 0
    return oracle


def finish(oracle, trial, status=TrialStatus.COMPLETED, score=None):
    """End `trial` as a tuner does: report the objective, then `end_trial`."""
    if status == TrialStatus.COMPLETED or score is not None:
        value = fake_score(trial.hyperparameters.values) if score is None else score
        oracle.update_trial(trial.trial_id, {"score": value})
    trial.status = status
    oracle.end_trial(trial)


def run_search(oracle, limit=None):
    """Create and complete trials one at a time until STOPPED (or `limit` trials)."""
    trials = []
    while limit is None or len(trials) < limit:
        trial = oracle.create_trial("tuner0")
        if trial.status == TrialStatus.STOPPED:
            break
        assert trial.status == TrialStatus.RUNNING  # a lone tuner never has to wait
        finish(oracle, trial)
        trials.append(trial)
    return trials


def log_area(box):
    return math.prod(math.log10(hi / lo) for lo, hi in box.values())


def inside(box, values):
    return all(lo <= values[name] <= hi for name, (lo, hi) in box.items())


def contains(outer, inner):
    return all(
        outer[name][0] <= inner[name][0] < inner[name][1] <= outer[name][1] for name in outer
    )


def test_rounds_split_max_trials_evenly(tmp_path):
    assert split_trials(50, 3) == [17, 17, 16]
    assert split_trials(10, 3) == [4, 3, 3]
    assert split_trials(5, 5) == [1, 1, 1, 1, 1]
    oracle = make_oracle(tmp_path, max_trials=10, rounds=3)
    trials = run_search(oracle)
    rounds = [oracle.round_of(t.trial_id) for t in trials]
    assert rounds == [1] * 4 + [2] * 3 + [3] * 3
    assert [row["trials"] for row in oracle.rounds_summary()] == [4, 3, 3]


def test_each_round_narrows_around_the_best_trials(tmp_path):
    oracle = make_oracle(tmp_path, max_trials=120, rounds=3)
    trials = run_search(oracle)
    assert len(trials) == 120 and len(oracle.trials) == 120
    boxes = oracle.boxes
    assert len(boxes) == 3 and boxes[0] == RANGES
    for outer, inner in zip(boxes, boxes[1:]):
        assert contains(outer, inner)
    assert inside(boxes[-1], {"eta": ETA_OPT, "lam": LAM_OPT})
    assert log_area(boxes[-1]) < log_area(boxes[0]) / 4
    for trial in trials:
        assert inside(boxes[oracle.round_of(trial.trial_id) - 1], trial.hyperparameters.values)
    # Each box is `narrow` of the previous one on its round's results.
    for r in (1, 2):
        results = [
            (t.hyperparameters.values, t.score) for t in trials if oracle.round_of(t.trial_id) == r
        ]
        assert boxes[r] == narrow(boxes[r - 1], results, 0.2, oracle.margin, "max")
    summary = oracle.rounds_summary()
    assert [row["round"] for row in summary] == [1, 2, 3]
    assert summary[0]["eta_range"] == [0.01, 0.7] and summary[0]["lam_range"] == [1e-6, 0.1]
    assert summary[2]["best"] >= summary[0]["best"]


def test_narrow_keeps_the_best_trials_inside_the_new_box():
    box = {"x": (1e-4, 1.0)}  # log-span 4
    results = [({"x": 10.0**e}, -abs(e + 2)) for e in (-4, -3, -2.5, -2, -1.5, -1, 0)]
    new = narrow(box, results, top_fraction=0.4, margin=0.1, direction="max")
    # Best ceil(0.4 * 7) = 3: 1e-2.5, 1e-2, 1e-1.5, widened by 0.1 * 4 = 0.4 decades.
    assert new["x"] == pytest.approx((10**-2.9, 10**-1.1))
    # A loss to minimize picks the same trials when its scores are the negatives.
    losses = [(values, -score) for values, score in results]
    assert narrow(box, losses, top_fraction=0.4, margin=0.1, direction="min") == new
    # The worst trials, near both edges, would keep almost the whole box.
    worst = narrow(box, results, top_fraction=0.4, margin=0.1, direction="min")
    assert worst["x"] == (1e-4, 1.0)


def test_narrow_never_empties_a_range():
    box = {"eta": (0.01, 0.7), "lam": (1e-6, 0.1)}
    span = {name: math.log10(hi / lo) for name, (lo, hi) in box.items()}
    # All best trials at one interior point: a box of width 2 * margin * span around it.
    same = [({"eta": 0.08, "lam": 2e-4}, 1.0)] * 5 + [({"eta": 0.5, "lam": 0.05}, -1.0)]
    new = narrow(box, same, 0.2, 0.1, "max")
    for name, point in (("eta", 0.08), ("lam", 2e-4)):
        lo, hi = new[name]
        assert lo < point < hi
        assert math.log10(hi / lo) == pytest.approx(0.2 * span[name])
    # A single completed trial at an edge: clipped, still at least margin * span wide.
    edge = narrow(box, [({"eta": 0.7, "lam": 1e-6}, 0.5)], 0.2, 0.1, "max")
    assert edge["eta"][1] == 0.7 and edge["lam"][0] == 1e-6
    assert math.log10(edge["eta"][1] / edge["eta"][0]) == pytest.approx(0.1 * span["eta"])
    assert math.log10(edge["lam"][1] / edge["lam"][0]) == pytest.approx(0.1 * span["lam"])
    # None completed (or no finite score): the box is kept.
    assert narrow(box, [], 0.2, 0.1, "max") == box
    assert narrow(box, [({"eta": 0.1, "lam": 1e-3}, None)], 0.2, 0.1, "max") == box
    assert narrow(box, [({"eta": 0.1, "lam": 1e-3}, float("nan"))], 0.2, 0.1, "max") == box


def test_failed_trials_are_ignored_by_the_narrowing(tmp_path):
    oracle = make_oracle(tmp_path, max_trials=24, rounds=2, max_consecutive_failed_trials=None)
    completed, failed = [], []
    for i in range(12):
        trial = oracle.create_trial(f"worker{i}")
        assert trial.status == TrialStatus.RUNNING
        if i % 3 == 0:
            # A crash after reporting a huge score, or before reporting anything.
            finish(oracle, trial, TrialStatus.FAILED, score=1e9 if i % 2 else None)
            failed.append(trial)
        else:
            finish(oracle, trial)
            completed.append(trial)
    trial = oracle.create_trial("worker12")
    assert oracle.round_of(trial.trial_id) == 2
    first, second = oracle.boxes
    results = [(t.hyperparameters.values, t.score) for t in completed]
    assert second == narrow(first, results, 0.2, oracle.margin, "max")
    with_failed = results + [(t.hyperparameters.values, 1e9) for t in failed]
    assert second != narrow(first, with_failed, 0.2, oracle.margin, "max")
    assert oracle.rounds_summary()[0]["trials"] == len(completed) == 8


def test_oracle_waits_for_the_round_before_narrowing(tmp_path):
    oracle = make_oracle(tmp_path, max_trials=6, rounds=2)
    round_one = [oracle.create_trial(f"worker{i}") for i in range(3)]
    assert all(t.status == TrialStatus.RUNNING for t in round_one)
    for trial in round_one[:2]:
        finish(oracle, trial)
    # Round 1's quota is created but one trial still runs: another worker waits.
    for _ in range(2):
        waiting = oracle.create_trial("worker3")
        assert waiting.status == TrialStatus.IDLE
    assert len(oracle.trials) == 3 and len(oracle.boxes) == 1
    finish(oracle, round_one[2])
    trial = oracle.create_trial("worker3")
    assert trial.status == TrialStatus.RUNNING
    assert oracle.round_of(trial.trial_id) == 2 and oracle.current_round == 2
    assert inside(oracle.boxes[1], trial.hyperparameters.values)


def test_retried_trial_counts_for_its_round(tmp_path):
    oracle = make_oracle(tmp_path, max_trials=6, rounds=2, max_retries_per_trial=1)
    trials = [oracle.create_trial("tuner0")]
    trials[0].status = TrialStatus.INVALID  # crashed, one retry left
    oracle.end_trial(trials[0])
    retried = oracle.create_trial("tuner0")
    assert retried.trial_id == trials[0].trial_id
    finish(oracle, retried)
    rest = run_search(oracle)
    assert len(oracle.trials) == 6
    assert [oracle.round_of(t.trial_id) for t in [retried] + rest] == [1, 1, 1, 2, 2, 2]


def test_other_hyperparameters_are_drawn_by_keras_tuner(tmp_path):
    hp = keras_tuner.HyperParameters()
    hp.Choice("units", [32, 64, 128])
    hp.Float("eta", 1e-5, 10.0, sampling="log")  # registered wider: the box still wins
    oracle = make_oracle(tmp_path, max_trials=12, rounds=2, hyperparameters=hp)
    trials = run_search(oracle)
    assert len(trials) == 12
    assert {t.hyperparameters.values["units"] for t in trials} == {32, 64, 128}
    for trial in trials:
        assert inside(
            oracle.boxes[oracle.round_of(trial.trial_id) - 1], trial.hyperparameters.values
        )


def test_reloaded_oracle_continues_the_same_search(tmp_path):
    hp = keras_tuner.HyperParameters()
    hp.Choice("units", [32, 64, 128])
    settings = dict(max_trials=30, rounds=3, hyperparameters=hp)
    reference = make_oracle(tmp_path, "reference", **settings)
    run_search(reference)

    first = make_oracle(tmp_path, "resumed", **settings)
    run_search(first, limit=14)
    killed = first.create_trial("tuner0")  # running when the search is killed
    assert killed.status == TrialStatus.RUNNING
    assert first.round_of(killed.trial_id) == 2

    resumed = make_oracle(tmp_path, "resumed", **settings)
    resumed.reload()
    retried = resumed.create_trial("tuner0")
    assert retried.trial_id == killed.trial_id
    assert retried.hyperparameters.values == killed.hyperparameters.values
    finish(resumed, retried)
    run_search(resumed)

    assert sorted(resumed.trials) == sorted(reference.trials)
    assert len(resumed.trials) == 30 and resumed.create_trial("tuner0").status == "STOPPED"
    assert resumed.boxes == reference.boxes
    assert resumed.rounds_summary() == reference.rounds_summary()
    for trial_id, trial in reference.trials.items():
        assert resumed.trials[trial_id].hyperparameters.values == trial.hyperparameters.values
        assert resumed.round_of(trial_id) == reference.round_of(trial_id)


def test_resume_with_other_settings_is_refused(tmp_path):
    oracle = make_oracle(tmp_path)
    run_search(oracle, limit=3)
    other = make_oracle(tmp_path, rounds=2)
    with pytest.raises(ValueError, match="rounds=2"):
        other.reload()


def test_same_seed_same_trials(tmp_path):
    def values(project, seed):
        oracle = make_oracle(tmp_path, project, max_trials=12, seed=seed)
        return [t.hyperparameters.values for t in run_search(oracle)]

    assert values("a", seed=3) == values("b", seed=3)
    assert values("a2", seed=3) != values("c", seed=4)


@pytest.mark.parametrize(
    "kwargs, received",
    [
        ({"ranges": {"eta": (0.7, 0.01)}}, "eta=(0.7, 0.01)"),
        ({"ranges": {"lam": (0.0, 0.1)}}, "lam=(0.0, 0.1)"),
        ({"ranges": {"lam": (-1e-6, 0.1)}}, "lam=(-1e-06, 0.1)"),
        ({"ranges": {"eta": (0.1, 0.1)}}, "eta=(0.1, 0.1)"),
        ({"ranges": {"eta": 0.1}}, "eta=0.1"),
        ({"ranges": {}}, "ranges={}"),
        ({"rounds": 0}, "rounds=0"),
        ({"rounds": 31}, "rounds=31"),
        ({"max_trials": 0, "rounds": 1}, "max_trials=0"),
        ({"top_fraction": 0.0}, "top_fraction=0.0"),
        ({"top_fraction": 1.5}, "top_fraction=1.5"),
        ({"margin": 0.0}, "margin=0.0"),
    ],
)
def test_invalid_arguments_raise_value_error(kwargs, received):
    settings = dict(objective=OBJECTIVE, max_trials=30, rounds=3, ranges=RANGES)
    settings.update(kwargs)
    with pytest.raises(ValueError, match=received.replace("(", r"\(").replace(")", r"\)")):
        CoarseToFineOracle(**settings)


def test_a_kill_while_saving_leaves_the_previous_state_files_whole(tmp_path, monkeypatch):
    oracle = make_oracle(tmp_path, max_trials=4, rounds=2)
    run_search(oracle, limit=2)
    trial = oracle.create_trial("tuner0")
    oracle.save()
    state_file = tmp_path / "p" / "oracle.json"
    before = state_file.read_text()

    def torn_write(self, text, *args, **kwargs):
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])
        raise KeyboardInterrupt  # the process dies mid-write

    monkeypatch.setattr(pathlib.Path, "write_text", torn_write)
    with pytest.raises(KeyboardInterrupt):
        oracle.save()
    with pytest.raises(KeyboardInterrupt):
        oracle._save_trial(trial)
    monkeypatch.undo()
    assert state_file.read_text() == before
    assert json.loads(before)  # still a whole JSON document
    assert not [p for p in (tmp_path / "p").rglob(".tmp-*")]


# Pruning: a trial's fake learning curve rises towards exp(fake_score), so the
# order of trials is the same at every epoch and the best trial is known.
EPOCHS = 9


def fake_curve(values, epoch):
    return math.exp(fake_score(values)) * epoch / (epoch + 1)


def train_reporting(oracle, trial):
    """Report epochs 1..EPOCHS until the oracle answers STOPPED; return the epochs run."""
    for epoch in range(1, EPOCHS + 1):
        answer = oracle.update_trial(
            trial.trial_id, {"score": fake_curve(trial.hyperparameters.values, epoch)}, step=epoch
        )
        if answer.status == TrialStatus.STOPPED:
            return epoch
    return EPOCHS


def pruned_search(oracle):
    epochs = {}
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status == TrialStatus.STOPPED:
            return epochs
        epochs[trial.trial_id] = train_reporting(oracle, trial)
        trial.status = TrialStatus.COMPLETED  # what KerasTuner's tuner says of a run that returned
        oracle.end_trial(trial)


def test_asha_stops_hopeless_trials_at_its_rungs_and_keeps_each_rounds_best(tmp_path):
    from tuning.pruning import Asha

    oracle = make_oracle(tmp_path, max_trials=30, rounds=2, pruning=Asha(EPOCHS))
    epochs = pruned_search(oracle)
    stopped = {tid for tid, t in oracle.trials.items() if t.status == TrialStatus.STOPPED}
    completed = {tid for tid, t in oracle.trials.items() if t.status == TrialStatus.COMPLETED}
    assert stopped and completed and stopped | completed == set(oracle.trials)
    assert {epochs[tid] for tid in stopped} <= {1, 3}
    assert oracle.trials_stopped == {tid: epochs[tid] for tid in stopped}
    assert sum(epochs.values()) < 0.6 * EPOCHS * len(epochs)
    for round_ids in oracle._round_trial_ids:
        best = max(round_ids, key=lambda tid: fake_score(oracle.trials[tid].hyperparameters.values))
        assert best in completed
    # A stopped trial is scored by its last report and counted apart from failed ones.
    some = next(iter(stopped))
    assert oracle.trials[some].score == pytest.approx(
        fake_curve(oracle.trials[some].hyperparameters.values, epochs[some])
    )
    assert [r["stopped"] for r in oracle.rounds_summary()] == [
        sum(1 for tid in ids if tid in stopped) for ids in oracle._round_trial_ids
    ]
    assert sum(r["trials"] for r in oracle.rounds_summary()) == len(completed)


def test_a_stopped_trial_is_not_run_again_after_a_reload(tmp_path):
    from tuning.pruning import Asha

    oracle = make_oracle(tmp_path, max_trials=8, rounds=1, pruning=Asha(EPOCHS))
    pruned_search(oracle)
    stopped = {tid for tid, t in oracle.trials.items() if t.status == TrialStatus.STOPPED}
    assert stopped
    resumed = make_oracle(tmp_path, max_trials=8, rounds=1, pruning=Asha(EPOCHS))
    resumed.reload()
    assert resumed.trials_stopped == oracle.trials_stopped
    assert {tid for tid, t in resumed.trials.items() if t.status == TrialStatus.STOPPED} == stopped
    assert resumed.create_trial("tuner0").status == TrialStatus.STOPPED  # nothing left to run


def test_a_trial_stopped_before_a_kill_stops_again_when_retried(tmp_path):
    from tuning.pruning import Asha

    oracle = make_oracle(tmp_path, max_trials=6, rounds=1, pruning=Asha(EPOCHS, min_trials=0))
    first = oracle.create_trial("tuner0")
    assert train_reporting(oracle, first) == EPOCHS
    first.status = TrialStatus.COMPLETED
    oracle.end_trial(first)
    worse = oracle.create_trial("tuner0")
    oracle.update_trial(worse.trial_id, {"score": -1.0}, step=1)  # hopeless: stopped at rung 1
    resumed = make_oracle(tmp_path, max_trials=6, rounds=1, pruning=Asha(EPOCHS, min_trials=0))
    resumed.reload()  # killed before the trial ended: it is retried
    retried = resumed.create_trial("tuner1")
    assert retried.trial_id == worse.trial_id
    assert (
        resumed.update_trial(retried.trial_id, {"score": -1.0}, step=2).status
        == TrialStatus.STOPPED
    )


def test_resume_with_another_pruning_is_refused(tmp_path):
    from tuning.pruning import Asha

    oracle = make_oracle(tmp_path, pruning=Asha(EPOCHS))
    run_search(oracle, limit=2)
    with pytest.raises(ValueError, match="pruning=none"):
        make_oracle(tmp_path).reload()


def test_a_released_workers_trial_goes_to_another_worker(tmp_path):
    oracle = make_oracle(tmp_path, max_trials=4, rounds=1)
    lost = oracle.create_trial("tuner0")
    oracle.release("tuner0")  # tuner0 died mid-trial
    assert "tuner0" not in oracle.tuner_ids and not oracle.ongoing_trials
    taken = oracle.create_trial("tuner1")
    assert taken.trial_id == lost.trial_id
    assert taken.hyperparameters.values == lost.hyperparameters.values


def test_after_pruning_the_next_box_is_drawn_around_the_trials_that_got_furthest(tmp_path):
    from tuning.pruning import Asha

    oracle = make_oracle(tmp_path, max_trials=30, rounds=2, pruning=Asha(EPOCHS))
    epochs = {}
    while len(oracle.boxes) == 1:
        trial = oracle.create_trial("tuner0")
        epochs[trial.trial_id] = train_reporting(oracle, trial)
        trial.status = TrialStatus.COMPLETED
        oracle.end_trial(trial)
    round_one = oracle._round_trial_ids[0]
    # ASHA's order: completed trials, then those stopped at 3 epochs, then at 1; by score within.
    ranked = sorted(
        round_one, key=lambda tid: (epochs[tid], oracle.trials[tid].score), reverse=True
    )
    results = [
        (oracle.trials[tid].hyperparameters.values, float(len(ranked) - i))
        for i, tid in enumerate(ranked)
    ]
    assert oracle.boxes[1] == narrow(oracle.boxes[0], results, 0.2, oracle.margin, "max")
    completed = [
        (oracle.trials[tid].hyperparameters.values, oracle.trials[tid].score)
        for tid in round_one
        if epochs[tid] == EPOCHS
    ]
    assert 0 < len(completed) < len(round_one)
    # Completed trials alone (2 of their 5 here) would draw another box.
    assert oracle.boxes[1] != narrow(oracle.boxes[0], completed, 0.2, oracle.margin, "max")


FINALISTS = {"max_trials": 12 + 2 * 3, "rounds": 2, "finalists": 2, "finalist_seeds": [1, 2, 3]}


def test_finalists_rerun_the_best_round_pairs_with_each_new_seed(tmp_path):
    oracle = make_oracle(tmp_path, **FINALISTS)
    assert oracle.round_sizes == [6, 6]  # the finalists' trials come on top of the rounds'
    trials = run_search(oracle)
    rounds, finals = trials[:12], trials[12:]
    assert len(finals) == 6
    best_two = sorted(rounds, key=lambda t: fake_score(t.hyperparameters.values))[-2:][::-1]
    expected = [
        (t.trial_id, t.hyperparameters.values["eta"], t.hyperparameters.values["lam"], seed)
        for t in best_two
        for seed in (1, 2, 3)
    ]
    got = [
        (v["finalist_of"], v["eta"], v["lam"], v["seed"])
        for v in (t.hyperparameters.values for t in finals)
    ]
    assert got == expected
    assert {oracle.round_of(t.trial_id) for t in finals} == {3}
    assert len(oracle.rounds_summary()) == 2  # the finalists narrow no box


def test_the_winner_is_the_pair_with_the_best_mean_not_the_best_round_score(tmp_path):
    oracle = make_oracle(tmp_path, **FINALISTS)
    trials = []
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status == TrialStatus.STOPPED:
            break
        values = trial.hyperparameters.values
        # The round's best pair is lucky: its new seeds score 0.1 below the runner-up's.
        score = None
        if "seed" in values:
            first = values["finalist_of"] == trials_best(trials)
            score = (0.5 if first else 0.6) + 0.01 * values["seed"]
        finish(oracle, trial, score=score)
        trials.append(trial)
    [winner, second] = oracle.finalist_standings()
    assert winner.mean == pytest.approx(0.62) and second.mean == pytest.approx(0.52)
    assert winner.trial_id != trials_best(trials[:12])
    assert winner.scores == pytest.approx([0.61, 0.62, 0.63])
    assert winner.stderr == pytest.approx(0.01 / math.sqrt(3))
    assert winner.search_score == pytest.approx(
        fake_score(oracle.trials[winner.trial_id].hyperparameters.values)
    )


def trials_best(trials):
    rounds = [t for t in trials if "seed" not in t.hyperparameters.values]
    return max(rounds, key=lambda t: fake_score(t.hyperparameters.values)).trial_id


def test_a_reloaded_oracle_runs_the_remaining_finalists_of_the_same_plan(tmp_path):
    oracle = make_oracle(tmp_path, **FINALISTS)
    first = run_search(oracle, limit=14)  # the rounds and two finalists
    reloaded = make_oracle(tmp_path, **FINALISTS)
    reloaded.reload()
    rest = run_search(reloaded)  # a trial the save calls running comes back first, as is
    uninterrupted = run_search(make_oracle(tmp_path / "again", **FINALISTS))
    resumed = {t.trial_id: t.hyperparameters.values for t in first + rest}
    assert resumed == {t.trial_id: t.hyperparameters.values for t in uninterrupted}
    assert len(resumed) == 18
    seeds = [(v["finalist_of"], v["seed"]) for v in resumed.values() if "seed" in v]
    assert len(set(seeds)) == 6  # each pair once per seed


def test_a_pruning_rule_never_stops_a_finalist(tmp_path):
    from tuning.pruning import Asha

    rule = Asha(EPOCHS)
    oracle = make_oracle(tmp_path, pruning=rule, **FINALISTS)
    run_search(oracle, limit=12)
    answers, worst = [], -10.0
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status == TrialStatus.STOPPED:
            break
        # Each finalist reports a worse score at every rung than every one before it.
        for step in rule.rungs:
            worst -= 1.0
            answer = oracle.update_trial(trial.trial_id, {"score": worst}, step=step)
            answers.append(answer.status)
        finish(oracle, trial)
    assert len(answers) == 6 * len(rule.rungs)
    assert TrialStatus.STOPPED not in answers


def test_resume_with_other_finalists_is_refused(tmp_path):
    run_search(make_oracle(tmp_path, **FINALISTS), limit=3)
    other = make_oracle(tmp_path, **{**FINALISTS, "finalist_seeds": [4, 5, 6]})
    with pytest.raises(ValueError, match="finalist_seeds"):
        other.reload()
