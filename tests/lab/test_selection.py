"""Choosing the fusion and its views by leave-one-kind-out measurement (``gga_lab.selection``)."""

import numpy as np
import pytest

from detectors.views import VIEWS
from gga_lab.selection import (
    GGA_VIEWS,
    Method,
    candidate_subsets,
    choose_fusion,
    default_methods,
)

VIEW_NAMES = tuple(VIEWS)


def test_candidate_subsets_always_hold_a_gga_view():
    subsets = candidate_subsets(VIEW_NAMES)
    assert all(any(v in GGA_VIEWS for v in s) for s in subsets)
    assert ("gga-csm",) in subsets and VIEW_NAMES in subsets and ("energy",) not in subsets
    # A model whose views include no GGA view keeps every subset.
    assert len(candidate_subsets(("energy", "msp"))) == 3


def test_choice_measures_every_method_on_left_out_kinds():
    rng = np.random.default_rng(0)
    n = 200
    clean = {v: rng.uniform(0, 1, n) for v in ("gga-csm", "energy", "knn")}
    # "energy" sees the first kind, "knn" the second; gga-csm sees neither.
    a = {
        "gga-csm": rng.uniform(0, 1, n),
        "energy": rng.uniform(0, 0.02, n),
        "knn": rng.uniform(0, 1, n),
    }
    b = {
        "gga-csm": rng.uniform(0, 1, n),
        "energy": rng.uniform(0, 1, n),
        "knn": rng.uniform(0, 0.02, n),
    }
    choice = choose_fusion(("gga-csm", "energy", "knn"), clean, {"a": a, "b": b})
    assert set(choice.scores) == {m.name for m in default_methods()}
    assert set(choice.per_kind[choice.method]) == {"a", "b"}
    # Learning a subset from kind "a" alone drops knn, which alone catches "b": left out, the
    # subsets fail where the rules over all views do not.
    assert choice.scores["fisher"] > choice.scores["fisher-subset"]
    assert choice.method in {"fisher", "cauchy", "tippett"}
    assert choice.fusion.views == ("gga-csm", "energy", "knn")


def _one_view_or_all_a_little(rng, n=400):
    """Clean inputs and two families of untrusted kind over four views.

    "one": a single view is sure (p = 0.002) while the others find the input typical, as the
    Mahalanobis view saw PGD on the standard CIFAR-10 model. "many1"/"many2": every view finds
    the input a little unusual (p between 0.1 and 0.4). Fisher ranks the "many" kinds above most
    clean inputs (a good AUROC) but flags almost none of them at alpha; Tippett flags every "one"
    input and ranks the "many" kinds at chance.
    """
    views = ("gga-csm", "energy", "knn", "mahalanobis")
    clean = {v: rng.uniform(0, 1, n) for v in views}
    one = {v: rng.uniform(0.9, 1.0, n) for v in views}
    one["mahalanobis"] = np.full(n, 0.002)
    untrusted = {"one": one}
    for kind in ("many1", "many2"):
        untrusted[kind] = {v: rng.uniform(0.1, 0.4, n) for v in views}
    return views, clean, untrusted


def test_the_criterion_decides_between_ranking_and_flagging():
    views, clean, untrusted = _one_view_or_all_a_little(np.random.default_rng(0))
    methods = (Method("fisher"), Method("tippett"))
    by_auroc = choose_fusion(views, clean, untrusted, methods=methods)
    by_flags = choose_fusion(views, clean, untrusted, methods=methods, criterion="tnr", alpha=0.05)
    assert by_auroc.method == "fisher"
    assert by_flags.method == "tippett"
    # The tnr scores are shares flagged at alpha on the left-out kind.
    assert by_flags.per_kind["tippett"]["one"] == 1.0
    assert by_flags.per_kind["fisher"]["many1"] < 0.1
    assert by_flags.to_dict()["criterion_name"] == "tnr"
    assert "flagged at alpha" in by_flags.to_dict()["criterion"]
    with pytest.raises(ValueError, match="unknown criterion"):
        choose_fusion(views, clean, untrusted, methods=methods, criterion="accuracy")


def test_choice_needs_two_kinds():
    p = {"gga-csm": np.random.rand(50)}
    with pytest.raises(ValueError, match="two kinds"):
        choose_fusion(("gga-csm",), p, {"a": p})
    with pytest.raises(ValueError, match="20 clean"):
        choose_fusion(("gga-csm",), {"gga-csm": np.random.rand(5)}, {"a": p, "b": p})
    assert Method("fisher", "subset").name == "fisher-subset"


def test_the_worst_criterion_scores_a_method_by_its_worst_left_out_kind():
    from gga_lab.selection import _Criterion

    worst, mean = _Criterion("worst"), _Criterion("tnr")
    assert mean.aggregate([1.0, 0.35]) == pytest.approx(0.675)
    assert worst.aggregate([1.0, 0.35]) == pytest.approx(0.35 + 0.000675)
    # Equal worst kinds: the better mean wins, by a margin no real difference in worst can hide.
    assert worst.aggregate([0.0, 1.0]) > worst.aggregate([0.0, 0.2])
    assert worst.aggregate([0.01, 0.0]) < worst.aggregate([0.02, 0.0])

    views, clean, untrusted = _one_view_or_all_a_little(np.random.default_rng(0))
    methods = (Method("fisher"), Method("tippett"), Method("cauchy"))
    choice = choose_fusion(views, clean, untrusted, methods=methods, criterion="worst")
    by_mean = choose_fusion(views, clean, untrusted, methods=methods, criterion="tnr")
    assert choice.per_kind == by_mean.per_kind  # the same shares flagged at alpha
    best = max(choice.per_kind, key=lambda m: worst.aggregate(list(choice.per_kind[m].values())))
    assert choice.method == best and choice.to_dict()["criterion_name"] == "worst"


def test_the_strength_criterion_keeps_what_one_view_catches_past_an_uncatchable_kind():
    # "one": only mahalanobis is sure (Tippett keeps it, Fisher drowns it); "hidden": no view
    # sees anything, so every method flags about alpha of it. The worst kind of every method
    # is "hidden", and `worst` chooses by its noise; `strength` measures each kind against
    # the best single view there, so it is ruled by "one" and keeps the view's strength.
    rng = np.random.default_rng(1)
    views, clean, untrusted = _one_view_or_all_a_little(rng)
    untrusted["hidden"] = {v: rng.uniform(0, 1, 400) for v in views}
    del untrusted["many2"]
    methods = (Method("fisher"), Method("tippett"))
    choice = choose_fusion(views, clean, untrusted, methods=methods, criterion="strength")
    assert choice.method == "tippett"
    assert choice.per_kind["tippett"]["one"] == pytest.approx(0.0)  # as strong as mahalanobis
    assert choice.per_kind["fisher"]["one"] < -0.5  # most of what mahalanobis caught, lost
    assert choice.to_dict()["criterion_name"] == "strength"


def test_a_rule_that_cannot_learn_from_so_few_clean_inputs_is_no_candidate():
    # 24 clean inputs: the guarded rule's clean reference gets 6 rows inside leave-one-kind-out
    # (a conformal calibration needs 20), so it is dropped, and the others still compete.
    rng = np.random.default_rng(2)
    views, clean, untrusted = _one_view_or_all_a_little(rng, n=24)
    views = (*views, "msp")
    clean["msp"] = rng.uniform(0, 1, 24)
    for kind in untrusted:
        untrusted[kind]["msp"] = rng.uniform(0, 1, 24)
    methods = (Method("fisher"), Method("guarded"), Method("clean-knn"))
    choice = choose_fusion(views, clean, untrusted, methods=methods, criterion="tnr")
    assert set(choice.scores) == {"fisher", "clean-knn"}
    assert choice.method in choice.scores
