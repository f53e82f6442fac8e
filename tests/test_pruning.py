"""Tests for tuning/pruning.py: the stopping rules on plain numbers."""

import pytest

from kbn.errors import KbnError
from tuning.pruning import Asha, Median, pruning_rule


def test_asha_rungs_grow_by_the_reduction_factor_and_leave_the_last_stretch_whole():
    assert Asha(10, reduction=3).rungs == (1, 3)
    assert Asha(9, reduction=3).rungs == (1, 3)
    assert Asha(27, reduction=3).rungs == (1, 3, 9)
    assert Asha(20, reduction=2, min_epochs=2).rungs == (2, 4, 8)
    assert Asha(2).rungs == ()


def test_asha_keeps_the_best_third_of_those_at_the_rung():
    rule = Asha(10, reduction=3, min_trials=0)
    assert not rule.should_stop(1, 0.1, [])  # the first at a rung always goes on
    assert not rule.should_stop(1, 0.5, [0.4, 0.3])  # the best of three
    assert rule.should_stop(1, 0.35, [0.4, 0.3])  # second of three: 3 // 3 = 1 goes on
    assert not rule.should_stop(3, 0.35, [0.4, 0.3, 0.2, 0.1, 0.05])  # second of six: 2 go on
    assert rule.should_stop(3, 0.3, [0.4, 0.35, 0.2, 0.1, 0.05])  # third of six
    assert not rule.should_stop(2, 0.0, [0.9, 0.9, 0.9])  # epoch 2 is no rung


def test_asha_judges_only_once_enough_trials_reached_the_rung():
    rule = Asha(10)  # min_trials=3
    assert not rule.should_stop(1, 0.1, [0.4, 0.3])
    assert rule.should_stop(1, 0.1, [0.4, 0.3, 0.2])


def test_asha_ties_favour_the_trial():
    assert not Asha(10, min_trials=0).should_stop(1, 0.4, [0.4, 0.4])


def test_median_rule_stops_below_the_median_once_enough_trials_reached_the_epoch():
    rule = Median(10, min_trials=3, warmup=1)
    assert not rule.should_stop(2, 0.1, [0.5, 0.6])  # too few to judge
    assert rule.should_stop(2, 0.4, [0.5, 0.6, 0.3])
    assert not rule.should_stop(2, 0.5, [0.5, 0.6, 0.3])
    assert not rule.should_stop(10, 0.0, [0.5, 0.6, 0.3])  # the last epoch is no stop


def test_pruning_rule_by_name():
    assert isinstance(pruning_rule("asha", 10), Asha)
    assert isinstance(pruning_rule("median", 10), Median)
    assert pruning_rule("none", 10) is None
    with pytest.raises(KbnError, match="pruning must be one of asha, median, none"):
        pruning_rule("hyperband", 10)
