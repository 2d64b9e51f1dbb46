"""The adaptive attack on the trust score: its surrogates, and success as the pipeline sees it."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from attacks.base import AttackParameterError
from attacks.evaluate import run_attack
from attacks.registry import ATTACKS
from detectors.calibration import ConformalCalibrator
from detectors.engine import EngineOptions, GradientEngine
from detectors.fusion import FUSIONS
from detectors.pipeline import GGAPipeline, engine_options_dict
from detectors.trust import TrustScorer
from detectors.views import VIEWS, View
from detectors.views.gga import GGAPaperView
from gga_lab.adaptive_trust import AdaptiveTrustPGD, attack_trust
from gga_lab.analysis.collect_results import adaptive_cell, summary_table
from gga_lab.collect import collect_view_inputs
from gga_lab.evaluate import EvalConfig, evaluate_model
from gga_lab.report import markdown
from gga_lab.trust_surrogate import SURROGATES, TrustSurrogate, has_surrogate

# Every view with a surrogate; the test model (a LeNet) serves them all.
ATTACKED = (
    "gga-paper", "gga-csm", "energy", "msp", "mahalanobis", "knn", "gradnorm", "squeeze", "blocks"
)  # fmt: skip


def fit_scorer(model, train, views: tuple[str, ...], fusion: str) -> TrustScorer:
    """A trust scorer fitted in about a second: the views on 600 training images, their own
    calibration on the next 200, the fused score's on the 200 after (correct ones only)."""
    options = EngineOptions(
        strategy="vmap",
        squeeze=any(VIEWS[v].needs_squeezed for v in views),
        blocks=any(VIEWS[v].needs_blocks for v in views),
    )
    engine = GradientEngine(model, options)
    order = torch.randperm(len(train.x), generator=torch.Generator().manual_seed(1))

    def part(start: int, stop: int):
        idx = order[start:stop]
        inputs = collect_view_inputs(engine, train.x[idx], 256, progress=False)
        return inputs.take(inputs.predicted == train.y[idx].numpy())

    fit, view_cal, cal = part(0, 600), part(600, 800), part(800, 1000)
    fitted = {
        v: (GGAPaperView(bins=20) if v == "gga-paper" else VIEWS[v]()).fit_features(fit)
        for v in views
    }
    return TrustScorer.calibrated(
        cal,
        views=fitted,
        view_calibrators={
            v: ConformalCalibrator(view.predict_features(view_cal)) for v, view in fitted.items()
        },
        fusion=FUSIONS[fusion](views),
        alpha=0.05,
        engine_options=engine_options_dict(options),
        model_name="mnist-small",
        weights_sha256="0" * 64,
    )


@pytest.fixture(scope="module")
def scorer(trained_lenet, mnist) -> TrustScorer:
    # Tippett: the most surprised view decides, so the squeeze view flags most plain PGD inputs.
    return fit_scorer(trained_lenet, mnist["train"], ATTACKED, "tippett")


def test_each_surrogate_is_its_views_score_on_clean_inputs(trained_lenet, scorer, correct_batch):
    assert set(SURROGATES) == set(ATTACKED)
    x = correct_batch.x[:16]
    inputs = GGAPipeline(trained_lenet, scorer).scored(x).inputs
    exact = TrustSurrogate(scorer, trained_lenet, exact=True)
    assert exact.attacked == scorer.view_names and exact.left_out == ()
    got = exact.view_scores(x.clone().requires_grad_(True))
    for name in ATTACKED:
        expected = scorer.views[name].predict_features(inputs)
        np.testing.assert_allclose(got[name].detach().numpy(), expected, rtol=1e-5, atol=1e-5)
    # The attack's smooth surrogates have a slope in every view (BPDA for bit depth, LODA's
    # interpolated histograms, the GGA maps' tanh on the Softplus copy).
    smooth = TrustSurrogate(scorer, trained_lenet)
    xg = x[:4].clone().requires_grad_(True)
    for name, score in smooth.view_scores(xg).items():
        (grad,) = torch.autograd.grad(score.sum(), xg, retain_graph=True)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, name
        assert smooth.scales[name] > 0


def test_the_adaptive_attack_fools_the_trust_score_at_least_as_often_as_pgd(
    trained_lenet, scorer, correct_batch
):
    pipeline = GGAPipeline(trained_lenet, scorer)
    x, y = correct_batch.x[:32], correct_batch.y[:32]
    eps, steps = 0.3, 20
    run = attack_trust(trained_lenet, pipeline, x, y, eps=eps, steps=steps, seed=0)
    r = run.report
    assert r.n == 32 and r.views_attacked == ATTACKED and r.views_not_attacked == ()
    # Measured: plain 9% (3 of 32: the squeeze view flags the rest), adaptive 19%, both
    # misclassifying all 32. The adaptive attack follows the plain one's path until the label
    # flips, then also descends the views' evidence, keeping the best iterate by real trust.
    assert r.plain_misclassified == 1.0 and r.adaptive_misclassified >= 0.9
    assert r.adaptive_success >= r.plain_success > 0
    assert r.either_success >= r.adaptive_success
    # Inside the ball and the pixel range.
    assert float((run.x_adv - x).abs().max()) <= eps + 1e-6
    assert float(run.x_adv.min()) >= 0.0 and float(run.x_adv.max()) <= 1.0
    # Success recomputed independently: the served pipeline's label and trust of each output.
    served = pipeline(run.x_adv)
    success = (served.labels != y.numpy()) & (served.trust >= scorer.alpha)
    np.testing.assert_array_equal(success, run.outcome.success)
    assert r.adaptive_success == pytest.approx(success.mean())
    plain = run_attack(ATTACKS.make("pgd", trained_lenet, eps=eps, steps=steps, seed=0), x, y)
    served = pipeline(plain.x_adv)
    plain_success = (served.labels != y.numpy()) & (served.trust >= scorer.alpha)
    assert r.plain_success == pytest.approx(plain_success.mean())
    assert json.loads(json.dumps(r.to_dict()))["views_attacked"] == list(ATTACKED)


class _Vibes(View):
    """A view the surrogates do not know."""

    name = "vibes"
    title = "vibes"

    def _fit(self, z):
        pass

    def _score(self, z):
        return np.zeros(len(z))

    def get_params(self):
        return {}

    @classmethod
    def from_params(cls, params):
        return cls()


def test_a_view_without_a_surrogate_is_left_out_of_the_gradient_and_reported(
    trained_lenet, mnist, correct_batch
):
    assert not has_surrogate(_Vibes()) and has_surrogate(VIEWS["blocks"]())
    base = fit_scorer(trained_lenet, mnist["train"], ("msp",), "fisher")
    scorer = TrustScorer(
        views={"msp": base.views["msp"], "vibes": _Vibes().fit_features(None)},
        view_calibrators={**base.view_calibrators, "vibes": ConformalCalibrator(np.zeros(50))},
        fusion=FUSIONS["fisher"](("msp", "vibes")),
        calibrator=base.calibrator,
        alpha=0.05,
        engine_options=base.engine_options,
        model_name="mnist-small",
        weights_sha256="0" * 64,
    )
    surrogate = TrustSurrogate(scorer, trained_lenet)
    assert surrogate.attacked == ("msp",) and surrogate.left_out == ("vibes",)
    x, y = correct_batch.x[:8], correct_batch.y[:8]
    pipeline = GGAPipeline(trained_lenet, scorer)
    report = attack_trust(trained_lenet, pipeline, x, y, eps=0.3, steps=4, check_every=2).report
    assert report.views_attacked == ("msp",) and report.views_not_attacked == ("vibes",)
    assert report.to_dict()["views_not_attacked"] == ["vibes"]


def test_attack_parameters_are_checked(trained_lenet, scorer):
    pipeline = GGAPipeline(trained_lenet, scorer)
    with pytest.raises(AttackParameterError, match="lam must be 0 or more"):
        AdaptiveTrustPGD(trained_lenet, pipeline, lam=-1.0)
    with pytest.raises(AttackParameterError, match="check_every"):
        AdaptiveTrustPGD(trained_lenet, pipeline, check_every=0)
    with pytest.raises(ValueError, match="fitted trust scorer"):
        AdaptiveTrustPGD(trained_lenet, GGAPipeline(trained_lenet, None))


def test_the_evaluation_runs_it_by_kind_and_reports_it(trained_lenet, scorer, mnist):
    cfg = EvalConfig(
        n=40, n_slow=10, adaptive_steps=5, n_baseline_fit=200, kinds=("adaptive_trust",)
    )
    result = evaluate_model(
        trained_lenet,
        scorer,
        model_name="mnist-small",
        dataset="mnist",
        train=(mnist["train"].x, mnist["train"].y),
        test=(mnist["test"].x, mnist["test"].y),
        cfg=cfg,
        progress=False,
    )
    a = result.adaptive_trust
    assert a is not None and a.n == 10 and a.steps == 5 and a.eps == 0.3
    info = result.kinds["adaptive_trust"]
    assert info["n_attempted"] == 10 and info["n_untrusted"] == round(10 * a.adaptive_misclassified)
    assert "adaptive_trust" in result.tnr["trust score"]  # its misclassified outputs are a kind
    text = markdown(result)
    assert "### Adaptive attack on the trust score" in text and "| plain PGD l∞ |" in text
    assert "Not measured" in markdown(dataclasses.replace(result, adaptive_trust=None))
    data = json.loads(json.dumps(result.to_dict(), default=list))
    assert adaptive_cell(data).startswith(f"{100 * a.plain_success:.1f}% → ")


def test_the_zoo_table_says_not_measured_for_reports_that_predate_it(tmp_path):
    committed = Path(__file__).parents[2] / "docs" / "results" / "mnist-lenet-low"
    if not (committed / "results.json").is_file():
        pytest.skip("committed results not present")
    folder = tmp_path / "mnist-lenet-low"
    shutil.copytree(committed, folder)
    data = json.loads((folder / "results.json").read_text())
    data.pop("adaptive_trust", None)  # a report written before the attack existed
    (folder / "results.json").write_text(json.dumps(data))
    assert summary_table([folder]).splitlines()[-1].endswith("| not measured |")
    data["adaptive_trust"] = {
        "n": 100, "plain_success": 0.25, "adaptive_success": 0.5, "either_success": 0.55
    }  # fmt: skip
    (folder / "results.json").write_text(json.dumps(data))
    assert (
        summary_table([folder]).splitlines()[-1].endswith("| 25.0% → **50.0%** (55.0%; n = 100) |")
    )
