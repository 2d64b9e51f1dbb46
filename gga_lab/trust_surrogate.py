"""Differentiable stand-ins of the trust views' scores, for attacks that know the fitted scorer.

The served trust score is a chain of numpy steps (view scores, conformal p-values, a fusion, a
final p-value), flat almost everywhere: no gradient reaches the input. An attacker who knows
the scorer recomputes each fused view's raw score in torch from the same fitted arrays, and
descends their sum, each divided by a scale read off that view's clean calibration scores so
that every view weighs alike (``calibration_scale``). ``TrustSurrogate`` does that:

- ``msp``, ``energy``: the same functions of the model's logits;
- ``mahalanobis``, ``knn``, ``gradnorm``: the same functions of ``model.embed(x)`` and
  ``model.head``, with the view's fitted projection, whitening, class means and bank;
- ``squeeze``: the model on each squeezer's copy; bit-depth rounding has a zero gradient, so it
  passes the gradient straight through (BPDA, Athalye et al. 2018), the median and blur are
  differentiated as they are;
- ``gga-csm``, ``gga-paper``: the CSM of the cosine-similarity attack (``gga_lab.csa``): maps
  ``tanh(beta g / mean|g|)`` in place of ``sign(g)``, taken on the Softplus copy of the model so
  that second derivatives exist; then the view's own score of that CSM: the Mahalanobis distance
  of its entries (``gga-csm``), or LODA on its ten features (``gga-paper``), each histogram's log
  density linearly interpolated between bin centres so that it has a slope.

- ``blocks``: the channel means of every block (``models.blocks`` with the graph kept), each
  block's Mahalanobis distance from the view's fitted Gaussians, the largest scaled one;

A fused view with no surrogate here (a ``gga-paper`` view holding a format-1 logistic
detector, any view added later) is left out of the gradient: the attack does
not push it, though the real trust score still counts it. ``TrustSurrogate.left_out`` names
them, and the attack's report says so.

With ``exact=True`` the surrogate is the real score (sign maps on the model itself, LODA's
histogram bins): what the tests compare with each view's numpy score on clean inputs.
"""

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectors.calibration import ConformalCalibrator
from detectors.csm import cosine_similarity_matrix
from detectors.features import gga_features
from detectors.fusion import SingleFusion
from detectors.loda import LODA
from detectors.saliency import rescale_logits, select_rows
from detectors.squeeze import SQUEEZERS
from detectors.trust import TrustScorer
from detectors.views import View
from detectors.views.projection import Projection
from gga_lab.csa import with_softplus
from models.blocks import block_features
from models.penultimate import logits_and_features

# The scale of a view is the spread of the upper half of its clean calibration scores, where the
# flags are: a score that far above the median has a p-value near 0.05.
SCALE_QUANTILES = (0.5, 0.95)


def calibration_scale(calibrator: ConformalCalibrator) -> float:
    """How far a view's score must rise to go from typical to unusual on clean inputs.

    Args:
        calibrator: the view's calibration (its sorted clean scores).

    Returns:
        The 95th minus the 50th percentile of the calibration scores; when they tie (a
        saturated score), their absolute size times 1e-3, and at least 1e-9.
    """
    low, high = np.quantile(calibrator.sorted_scores, SCALE_QUANTILES)
    spread = float(high - low)
    return spread if spread > 1e-9 else max(1e-3 * float(abs(high)), 1e-9)


def _as_tensor(array: Any, device: torch.device) -> Tensor:
    return torch.as_tensor(np.asarray(array, dtype=np.float64), device=device)


def _project(projection: Projection, h: Tensor) -> Tensor:
    """``Projection.__call__`` in torch (identity without components)."""
    if projection.components is None:
        return h
    mean = _as_tensor(projection.mean, h.device)
    return (h - mean) @ _as_tensor(projection.components, h.device).T


def _straight_through(squeeze: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """``squeeze`` forward, the identity backward (BPDA for a rounding with zero gradient)."""
    return lambda x: x + (squeeze(x) - x).detach()


class Pass:
    """One batch through the model, shared by every view's surrogate.

    Args:
        surrogate: the owner (models, engine options, sharpness).
        x: inputs (B, C, H, W), requiring grad.
    """

    def __init__(self, surrogate: "TrustSurrogate", x: Tensor) -> None:
        self.surrogate = surrogate
        self.x = x
        self.logits, self.features = logits_and_features(surrogate.model, x)  # (B, C), (B, F)
        self.predicted = self.logits.detach().argmax(dim=1)
        self._csm: Tensor | None = None

    def csm(self) -> Tensor:
        """The (B, K, K) CSM of GGA's maps (smooth or exact), computed once per pass."""
        if self._csm is None:
            s = self.surrogate
            self._csm = gga_csm(s.maps_model, self.x, s.options, beta=s.beta)
        return self._csm

    def predicted_row(self) -> Tensor:
        """Row of the predicted class among the CSM's rows (0 with top-N, most probable first)."""
        if self.surrogate.options.get("top_n"):
            return torch.zeros_like(self.predicted)
        return self.predicted


def gga_csm(model: nn.Module, x: Tensor, options: dict[str, Any], beta: float | None) -> Tensor:
    """GGA's CSM of ``x`` as the engine makes it, differentiable when ``beta`` is set.

    The gradients ``grad_x CE(r(z), i)`` of the engine's rows (``rescale_logits``, ``top_n``),
    then ``sign`` (``beta=None``) or ``tanh(beta g / mean|g|)`` (``gga_lab.csa``'s surrogate),
    the max over colour channels, and the cosine similarities.

    Args:
        model: the classifier (its Softplus copy for a useful second derivative).
        x: inputs (B, C, H, W) requiring grad.
        options: the scorer's ``engine_options``.
        beta: surrogate sharpness, or ``None`` for the engine's exact maps.

    Returns:
        (B, K, K) CSMs, differentiable in ``x`` through the gradients (``create_graph``).
    """
    z = model(x)  # (B, C)
    rows = select_rows(z.detach(), options.get("top_n"))  # (B, K)
    scaled = rescale_logits(z) if options.get("rescale_logits", True) else z
    grads = []
    for k in range(rows.shape[1]):
        loss = F.cross_entropy(scaled, rows[:, k], reduction="sum")
        (g,) = torch.autograd.grad(loss, x, create_graph=beta is not None, retain_graph=True)
        grads.append(g)
    g = torch.stack(grads, dim=1)  # (B, K, C, H, W)
    if options.get("sign", True):
        if beta is None:
            g = g.sign()
        else:
            scale = g.abs().flatten(2).mean(dim=2).clamp_min(1e-12)  # (B, K)
            g = torch.tanh(beta * g / scale[:, :, None, None, None])
    if options.get("channel_max", True):
        g = g.amax(dim=2)
    return cosine_similarity_matrix(g.flatten(2).to(torch.float32))


def _msp(view: View, p: Pass) -> Tensor:
    return -p.logits.double().softmax(dim=1).amax(dim=1)


def _energy(view: View, p: Pass) -> Tensor:
    return -torch.logsumexp(p.logits.double(), dim=1)


def _gradnorm(view: View, p: Pass) -> Tensor:
    probs = p.logits.double().softmax(dim=1)
    dz = (probs - 1.0 / probs.shape[1]).abs().sum(dim=1)
    return -(dz * p.features.double().abs().sum(dim=1))


def _mahalanobis(view: View, p: Pass) -> Tensor:
    whiten, means = view._whitened()  # (D, D), (C', D): the classes seen at fit
    w = _project(view.projection, p.features.double()) @ _as_tensor(whiten, p.x.device)
    diff = w[:, None, :] - _as_tensor(means, p.x.device)[None]  # (B, C', D)
    return diff.square().sum(dim=2).amin(dim=1)


def _knn(view: View, p: Pass) -> Tensor:
    h = p.features.double()
    queries = h / h.norm(dim=1, keepdim=True).clamp_min(1e-12)
    kth = (queries @ _as_tensor(view.bank, p.x.device).T).topk(view.k, dim=1).values[:, -1]
    return (2.0 - 2.0 * kth).clamp_min(1e-12).sqrt()


def _squeeze(view: View, p: Pass) -> Tensor:
    rows = torch.arange(len(p.x), device=p.x.device)
    own = p.logits.double().log_softmax(dim=1)[rows, p.predicted]  # (B,)
    copies = []
    for name in view.squeezers:
        squeeze = SQUEEZERS[name]
        if name.startswith("bits") and not p.surrogate.exact:
            squeeze = _straight_through(squeeze)
        logits = p.surrogate.model(squeeze(p.x)).double()
        copies.append(logits.log_softmax(dim=1)[rows, p.predicted])
    drop = own[:, None] - torch.stack(copies, dim=1)  # (B, S)
    return (drop / _as_tensor(view.scale, p.x.device)).amax(dim=1)


def _blocks(view: View, p: Pass) -> Tensor:
    blocks = block_features(p.surrogate.model, p.x, grad=True)
    ratios = []
    for gaussian, h, scale in zip(view.gaussians, blocks, view.scale, strict=True):
        whiten, means = gaussian.whitened()
        w = _project(gaussian.projection, h.double()) @ _as_tensor(whiten, p.x.device)
        distance = (w[:, None, :] - _as_tensor(means, p.x.device)[None]).square().sum(dim=2)
        ratios.append(distance.amin(dim=1) / float(scale))
    return torch.stack(ratios, dim=1).amax(dim=1)


def _gga_csm(view: View, p: Pass) -> Tensor:
    csm = p.csm().double()
    upper = torch.triu_indices(csm.shape[1], csm.shape[1], 1, device=csm.device)
    entries = _project(view.projection, csm[:, upper[0], upper[1]])  # (B, D)
    e = entries - _as_tensor(view.means, csm.device)[p.predicted]
    precisions = _as_tensor(view.precisions, csm.device)
    precision = precisions[0 if len(precisions) == 1 else p.predicted]
    if precision.dim() == 2:
        precision = precision.expand(len(e), -1, -1)
    return torch.einsum("nd,nde,ne->n", e, precision, e)


def _gga_paper(view: View, p: Pass) -> Tensor:
    features = gga_features(p.csm(), p.predicted_row()).double()  # (B, 10)
    return loda_score(view.detector, features, smooth=not p.surrogate.exact)


def loda_score(detector: LODA, features: Tensor, smooth: bool) -> Tensor:
    """LODA's score ``-mean_j log p_j(w_j . z)`` in torch.

    Args:
        detector: a fitted LODA.
        features: (B, D) features.
        smooth: interpolate each histogram's log density linearly between bin centres (a
            slope for gradients); ``False`` reads the bins as ``LODA.predict_features`` does.

    Returns:
        (B,) scores.
    """
    prm = detector.params
    dev = features.device
    proj = ((features - _as_tensor(prm.mean, dev)) / _as_tensor(prm.scale, dev)) @ _as_tensor(
        prm.weights, dev
    ).T  # (B, k)
    pos = (proj - _as_tensor(prm.lower, dev)) / _as_tensor(prm.width, dev)
    bins = prm.log_density.shape[1]
    inside = (pos >= 0) & (pos < bins)
    density = _as_tensor(prm.log_density, dev)  # (k, bins)
    column = torch.arange(density.shape[0], device=dev)[None, :]
    if smooth:
        centre = (pos - 0.5).clamp(0, bins - 1)
        left = centre.floor().long().clamp(max=bins - 1)
        right = (left + 1).clamp(max=bins - 1)
        frac = centre - left.to(centre.dtype)
        logd = (1 - frac) * density[column, left] + frac * density[column, right]
    else:
        logd = density[column, pos.detach().floor().long().clamp(0, bins - 1)]
    return -torch.where(inside, logd, prm.floor).mean(dim=1)


SURROGATES: dict[str, Callable[[View, Pass], Tensor]] = {
    "msp": _msp,
    "energy": _energy,
    "gradnorm": _gradnorm,
    "mahalanobis": _mahalanobis,
    "knn": _knn,
    "squeeze": _squeeze,
    "blocks": _blocks,
    "gga-csm": _gga_csm,
    "gga-paper": _gga_paper,
}
GGA_VIEWS: tuple[str, ...] = ("gga-csm", "gga-paper")


def has_surrogate(view: View) -> bool:
    """Whether ``view`` has a torch surrogate here (``gga-paper`` only when it holds LODA)."""
    if view.name == "gga-paper":
        return isinstance(getattr(view, "detector", None), LODA)
    return view.name in SURROGATES


class TrustSurrogate:
    """The fused views' raw scores in torch, and their scaled sum: the attacker's evidence.

    Args:
        scorer: the fitted trust scorer; its fused views (``view_names``) are attacked.
        model: the classifier it scores (eval mode).
        exact: the real scores (sign maps on ``model``, LODA's bins), for checking; the attack
            uses the smooth ones.
        beta: sharpness of the ``tanh`` surrogate of ``sign`` (``gga_lab.csa``).
        softplus_beta: sharpness of the Softplus replacing ReLU for the GGA views' maps.

    Attributes:
        attacked: the fused views with a surrogate, in fusion order.
        left_out: the fused views without one (not pushed by the attack).
        scales: each attacked view's ``calibration_scale``.
    """

    def __init__(
        self,
        scorer: TrustScorer,
        model: nn.Module,
        *,
        exact: bool = False,
        beta: float = 3.0,
        softplus_beta: float = 10.0,
    ) -> None:
        self.model = model
        self.options = dict(scorer.engine_options)
        self.exact = exact
        self.beta = None if exact else beta
        views = {name: scorer.views[name] for name in scorer.view_names}
        self.views = {n: v for n, v in views.items() if has_surrogate(v)}
        self.attacked = tuple(self.views)
        self.left_out = tuple(n for n in views if n not in self.views)
        self.scales = {n: calibration_scale(_calibrator(scorer, n)) for n in self.attacked}
        smooth = not exact and any(n in GGA_VIEWS for n in self.attacked)
        self.maps_model = with_softplus(model, softplus_beta) if smooth else model

    def start(self, x: Tensor) -> Pass:
        """The model's forward pass on ``x`` (which must require grad), shared by the views."""
        return Pass(self, x)

    def view_scores(self, x: Tensor) -> dict[str, Tensor]:
        """Each attacked view's raw score (B,), differentiable in ``x`` (which must require grad).

        Args:
            x: inputs (B, C, H, W) in [0, 1].

        Returns:
            View name -> (B,) float64 scores; higher = less trusted, as the views' own.
        """
        p = self.start(x)
        return {name: SURROGATES[name](view, p) for name, view in self.views.items()}

    def evidence(self, p: Pass) -> Tensor:
        """The attacked views' scores, each divided by its scale, summed: (B,) float64.

        Args:
            p: the pass (``start``) of the inputs.

        Returns:
            The evidence; 0 (not requiring grad) when no view is attacked.
        """
        total = torch.zeros(len(p.x), dtype=torch.float64, device=p.x.device)
        for name, view in self.views.items():
            total = total + SURROGATES[name](view, p) / self.scales[name]
        return total


def _calibrator(scorer: TrustScorer, name: str) -> ConformalCalibrator:
    """The calibration of view ``name``: its own, or the final one of a single-view scorer."""
    if isinstance(scorer.fusion, SingleFusion):
        return scorer.calibrator  # format 1: the trust score is that view's raw score's p-value
    return scorer.view_calibrators[name]
