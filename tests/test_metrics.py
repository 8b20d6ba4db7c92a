"""Evaluator statistics against hand-computed values (worked out in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgemed.evaluator import analysis
from edgemed.evaluator import metrics as m
from edgemed.evaluator.compare import compare


def test_wilson_hand_computed():
    # p = 0.8, z = 1.959964: denom = 1 + z^2/10 = 1.384146; center = (0.8 + 0.192073) / denom = 0.716741;
    # half = z * sqrt(0.016 + 0.009604) / denom = 0.226540 -> (0.4902, 0.9433)
    lo, hi = m.wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=5e-5)
    assert hi == pytest.approx(0.9433, abs=5e-5)
    # k = 0: lower bound 0, upper = (z^2/n) / (1 + z^2/n) = 0.384146 / 1.384146 = 0.27753
    assert m.wilson_interval(0, 10) == pytest.approx((0.0, 0.27753), abs=5e-5)
    assert m.wilson_interval(10, 10) == pytest.approx((0.72247, 1.0), abs=5e-5)
    assert m.wilson_interval(0, 0) == (0.0, 1.0)
    # 90%: z = 1.644854 narrows it
    lo90, hi90 = m.wilson_interval(8, 10, 0.90)
    assert lo < lo90 < 0.8 < hi90 < hi
    with pytest.raises(ValueError):
        m.wilson_interval(11, 10)
    # the interval holds p exactly at the ends (rounding once left the k = 0 lower bound at 2.8e-17 > 0, and the
    # Pareto plot's error bar negative)
    for n in (1, 3, 5, 7, 11, 97):
        assert m.wilson_interval(0, n)[0] == 0.0 and m.wilson_interval(n, n)[1] == 1.0


def test_mcnemar_exact_hand_computed():
    # n = 10 discordant: 2 * P(X <= 1) = 2 * (1 + 10) / 1024 = 0.021484375
    assert m.mcnemar_exact(1, 9) == pytest.approx(0.021484375, abs=1e-12)
    assert m.mcnemar_exact(9, 1) == pytest.approx(0.021484375, abs=1e-12)
    # 2 * (1 + 10 + 45) / 1024 = 0.109375
    assert m.mcnemar_exact(2, 8) == pytest.approx(0.109375, abs=1e-12)
    assert m.mcnemar_exact(0, 6) == pytest.approx(2 / 64, abs=1e-12)
    assert m.mcnemar_exact(5, 5) == 1.0  # capped
    assert m.mcnemar_exact(0, 0) == 1.0


def test_chi2_survival_known_quantiles():
    assert m.chi2_sf(3.841459, 1) == pytest.approx(0.05, abs=1e-6)
    assert m.chi2_sf(5.991465, 2) == pytest.approx(0.05, abs=1e-6)
    assert m.chi2_sf(7.814728, 3) == pytest.approx(0.05, abs=1e-6)
    assert m.chi2_sf(11.344867, 3) == pytest.approx(0.01, abs=1e-6)
    assert m.chi2_sf(9.487729, 4) == pytest.approx(0.05, abs=1e-6)
    assert m.chi2_sf(2.0, 2) == pytest.approx(math.exp(-1))
    assert m.chi2_sf(0.0, 3) == 1.0


def test_chi_square_goodness_of_fit():
    # all 10 answers on A, gold uniform: expected 2.5 each -> 7.5^2/2.5 + 3 * 2.5^2/2.5 = 22.5 + 7.5 = 30
    out = m.chi_square_gof([10, 0, 0, 0], [1, 1, 1, 1])
    assert out["chi2"] == pytest.approx(30.0)
    assert out["df"] == 3
    assert out["p_value"] == pytest.approx(m.chi2_sf(30.0, 3))
    assert m.chi_square_gof([3, 3, 3, 3], [1, 1, 1, 1])["chi2"] == 0.0


def test_ece_small_constructed_case():
    # bins: (0.9,1]: 2 items, acc 0.5, conf 0.95 -> 0.4 * 0.45 = 0.18
    #       (0.6,0.7]: 2 items, acc 1.0, conf 0.65 -> 0.4 * 0.35 = 0.14
    #       (0.3,0.4]: 1 item, acc 0.0, conf 0.35 -> 0.2 * 0.35 = 0.07   => ECE 0.39
    conf = [0.95, 0.95, 0.65, 0.65, 0.35]
    ok = [True, False, True, True, False]
    assert m.expected_calibration_error(conf, ok) == pytest.approx(0.39)
    bins = m.calibration_bins(conf, ok)
    assert [(b["lo"], b["n"]) for b in bins] == [(pytest.approx(0.3), 1), (pytest.approx(0.6), 2), (0.9, 2)]
    # perfectly calibrated: confidence 0.5, half right -> 0
    assert m.expected_calibration_error([0.5] * 4, [True, False, True, False]) == pytest.approx(0.0)


def test_ece_bin_edges_are_right_closed():
    # 0.7 belongs to (0.6, 0.7] even though 0.7 * 10 is 7.000000000000001 in floating point
    bins = m.calibration_bins([0.7, 1.0, 0.0], [True, True, False])
    assert [(round(b["lo"], 1), b["n"]) for b in bins] == [(0.0, 1), (0.6, 1), (0.9, 1)]


def test_accuracy_at_coverage_hand_computed():
    conf = [0.9, 0.8, 0.7, 0.6, 0.5]
    ok = [True, True, False, True, False]
    rows = {r["coverage"]: r for r in m.accuracy_at_coverage(conf, ok)}
    assert (rows[1.0]["n"], rows[1.0]["accuracy"], rows[1.0]["threshold"]) == (5, 0.6, 0.5)
    assert (rows[0.8]["n"], rows[0.8]["accuracy"], rows[0.8]["threshold"]) == (4, 0.75, 0.6)
    assert rows[0.6]["n"] == 3 and rows[0.6]["accuracy"] == pytest.approx(2 / 3)
    assert (rows[0.4]["n"], rows[0.4]["accuracy"]) == (2, 1.0)
    assert (rows[0.2]["n"], rows[0.2]["accuracy"]) == (1, 1.0)
    with pytest.raises(ValueError):
        m.accuracy_at_coverage(conf, ok, [0.0])


def test_kl_divergence_hand_computed():
    p = np.array([[0.5, 0.5, 0.0, 0.0], [0.25] * 4])
    q = np.array([[0.25] * 4, [0.25] * 4])
    kl = m.kl_divergence(p, q)
    assert kl[0] == pytest.approx(math.log(2))  # 2 * 0.5 * ln(0.5 / 0.25)
    assert kl[1] == pytest.approx(0.0)
    assert m.kl_divergence(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.4, 0.3, 0.2, 0.1])) == pytest.approx(
        0.1 * math.log(0.25) + 0.2 * math.log(2 / 3) + 0.3 * math.log(1.5) + 0.4 * math.log(4)
    )


def test_brier_score():
    assert m.brier_score(np.array([[1.0, 0, 0, 0]]), [0]) == 0.0
    # uniform, gold A: 0.75^2 + 3 * 0.25^2 = 0.75
    assert m.brier_score(np.array([[0.25] * 4]), [0]) == pytest.approx(0.75)


def test_interval_width_table_matches_wilson():
    rows = m.interval_width_table(0.8, sizes=(10, 100))
    lo, hi = m.wilson_interval(8, 10)
    assert rows[0]["lo"] == pytest.approx(lo) and rows[0]["hi"] == pytest.approx(hi)
    assert rows[0]["width"] == pytest.approx(hi - lo)
    assert rows[1]["width"] < rows[0]["width"]


def test_sample_size_for_a_difference():
    # p1 = 0.5, p2 = 0.6: (1.959964 * sqrt(2 * .55 * .45) + 0.841621 * sqrt(.25 + .24))^2 / 0.01 = 387.3 -> 388
    assert m.n_to_detect_difference(0.5, 0.10) == 388
    # paired, discordant 0.2: (1.959964 * sqrt(.2) + 0.841621 * sqrt(.19))^2 / 0.01 = 154.6 -> 155
    assert m.n_to_detect_paired(0.2, 0.10) == 155
    assert m.n_to_detect_difference(0.5, 0.02) > m.n_to_detect_difference(0.5, 0.05)
    with pytest.raises(ValueError):
        m.n_to_detect_paired(0.05, 0.10)


def _pred(i: int, gold: str, predicted: str | None, probs: list[float] | None = None, **extra) -> dict:
    out = {"id": str(i), "gold": gold, "predicted": predicted, "correct": predicted == gold, **extra}
    if probs is not None:
        out["probs"] = dict(zip("ABCD", probs, strict=True))
    return out


def test_compare_counts_agreement_kl_and_mcnemar():
    uniform = [0.25] * 4
    sharp = [0.5, 0.5, 0.0, 0.0]
    ref = [_pred(i, "A", "A", uniform) for i in range(9)] + [_pred(9, "A", "B", uniform), _pred(99, "A", "A")]
    # this run: 1 right that the reference got wrong (id 9), 9 wrong that the reference got right -> b=9, c=1
    this = [_pred(i, "A", "C", sharp) for i in range(9)] + [_pred(9, "A", "A", sharp), _pred(50, "A", "A")]
    out = compare(ref, this)
    assert out["n"] == 10
    assert (out["only_in_reference"], out["only_in_this"]) == (1, 1)
    assert (out["b_reference_only_correct"], out["c_this_only_correct"]) == (9, 1)
    assert out["mcnemar_p"] == pytest.approx(0.021484375)
    assert out["agreement"] == 0.0
    assert out["accuracy_reference"] == 0.9 and out["accuracy"] == 0.1
    assert out["accuracy_difference"] == pytest.approx(-0.8)
    # KL(uniform || [.5,.5,0,0]) = 2 * .25 ln(.25/.5) + 2 * .25 ln(.25/1e-12): dominated by the clipped zeros
    expected = 0.5 * math.log(0.5) + 0.5 * math.log(0.25 / 1e-12)
    assert out["mean_kl"] == pytest.approx(expected)
    same = compare(ref, ref)
    assert same["agreement"] == 1.0 and same["mean_kl"] == 0.0 and same["mcnemar_p"] == 1.0


def test_compare_refuses_disjoint_or_relabelled_runs():
    from edgemed.errors import EdgemedError

    with pytest.raises(EdgemedError, match="no question ids"):
        compare([_pred(1, "A", "A")], [_pred(2, "A", "A")])
    with pytest.raises(EdgemedError, match="different gold"):
        compare([_pred(1, "A", "A")], [_pred(1, "B", "A")])


def test_analysis_failures_and_letter_bias():
    preds = [
        _pred(1, "A", "B", [0.05, 0.85, 0.05, 0.05]),  # confident wrong
        _pred(2, "C", "B", [0.05, 0.45, 0.40, 0.10]),  # near miss: gold runner-up, margin 0.05
        _pred(3, "D", "B", [0.30, 0.40, 0.05, 0.25]),  # wrong, gold third: neither
        _pred(4, "A", "A", [0.70, 0.10, 0.10, 0.10]),
        _pred(5, "C", None, [0.25, 0.25, 0.25, 0.25], text="I am not sure"),
    ]
    out = analysis.analyse_predictions(preds, {}, examples=5)
    f = out["failures"]
    assert f["wrong"] == 4
    assert [e["id"] for e in f["confident_wrong"]["examples"]] == ["1"]
    assert [e["id"] for e in f["near_miss"]["examples"]] == ["2"]
    assert f["near_miss"]["examples"][0]["margin"] == pytest.approx(0.05)
    assert f["unparseable"]["count"] == 1 and f["unparseable"]["examples"][0]["text"] == "I am not sure"
    assert out["letters"]["over_predicted"] == "B"
    assert out["letters"]["predicted"] == {"A": 1, "B": 3, "C": 0, "D": 0}
    assert (out["letters"]["majority_letter"], out["letters"]["majority_baseline"]) == ("A", 0.4)  # gold A,C,D,A,C
    assert f["position_bias"]["count"] == 3
    assert out["accuracy"] == 0.2 and out["unparseable"] == 1
    # unparseable counts as confidence 0 and wrong in calibration
    assert out["calibration"]["n"] == 5
    assert out["calibration"]["accuracy_at_coverage"][-1]["accuracy"] == 0.0  # top-1 is the confident wrong one
