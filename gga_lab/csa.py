"""The cosine-similarity attack (CSA) on GGA, the paper's adaptive attack on its own detector.

GGA trusts an input whose per-class saliency maps agree: clean, correctly classified inputs have
a high mean similarity over S1 (the pairs of classes not involving the predicted class k), while
adversarial inputs have a low one. An attacker who knows the detector therefore wants an input
that is misclassified *and* has a high S1 mean, like a clean input. CSA does PGD ascent on

    0.8 * mean(S1) + 0.2 * CE(F(x'), y)          (untargeted)
    0.8 * mean(S1) - 0.2 * CE(F(x'), target)     (targeted)

i.e. it raises the S1 mean while pushing the prediction away from y (or toward the target).

Two changes make the objective differentiable: the saliency maps ``sign(g_i)`` become
``tanh(beta * g_i / mean|g_i|)`` (scale-free, so one beta suits every model), and the model's ReLUs
become Softplus (``with_softplus``), because the objective's gradient differentiates through the
input gradients g_i (second order) and ReLU's second derivative is zero almost everywhere.

This module imports ``detectors.csm``: the attack must go through the detector's own CSM.
"""

import copy
import dataclasses
import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attacks.base import Attack, TargetMode, check_eps, check_positive
from attacks.norms import Norm, project, random_in_ball, steepest_step
from detectors.csm import cosine_similarity_matrix

logger = logging.getLogger(__name__)

S1_WEIGHT = 0.8  # the paper's weights of the two terms
CE_WEIGHT = 0.2
LOGIT_SCALE = 10.0  # GGA's reference rescales logits to max |z| = 10 before the loss


def with_softplus(model: nn.Module, beta: float = 10.0) -> nn.Module:
    """A copy of ``model`` with every ``nn.ReLU`` module replaced by ``nn.Softplus(beta)``.

    Same weights (the copy is independent of ``model``, which is left untouched), eval mode,
    parameters frozen. A large ``beta`` keeps Softplus close to ReLU, so a trained ReLU model keeps
    its accuracy; for the project's architectures this equals rebuilding the model with config
    ``activation="softplus"`` (``models.layers.make_activation`` uses the same beta), and the copy's
    ``config`` says so. ReLUs applied functionally (``torch.relu`` in ``forward``) cannot be
    swapped: such a model has zero second derivatives and CSA degenerates to first order.

    Args:
        model: any classifier.
        beta: Softplus sharpness.

    Returns:
        The Softplus copy.
    """
    smooth = copy.deepcopy(model).eval()
    swapped = 0
    for parent in smooth.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Softplus(beta=beta))
                swapped += 1
    config = getattr(smooth, "config", None)
    if dataclasses.is_dataclass(config) and hasattr(config, "activation"):
        smooth.config = dataclasses.replace(config, activation="softplus")
    if swapped == 0 and not any(isinstance(m, nn.Softplus) for m in smooth.modules()):
        logger.warning(
            "with_softplus: %s has no nn.ReLU or nn.Softplus module; if it applies ReLU "
            "functionally, its second derivatives are zero and CSA is first order only",
            type(model).__name__,
        )
    for p in smooth.parameters():
        p.requires_grad_(False)
    return smooth


def saliency_maps(
    model: nn.Module,
    x: Tensor,
    beta: float | None = 3.0,
    create_graph: bool = True,
    classes: Tensor | None = None,
) -> Tensor:
    """Per-class saliency maps of GGA, exact or smooth.

    ``g_i = grad_x CE(z', i)`` for every class i, with ``z' = 10 z / max_j |z_j|`` (the reference
    code's rescaling), reduced over colour channels by a max as the detector does.

    Args:
        model: classifier on [0, 1] pixels.
        x: inputs (B, C, H, W); must require grad if the maps are to be differentiated.
        beta: ``None`` for the detector's ``sign(g)``; else ``tanh(beta * g / mean|g|)``.
        create_graph: keep the graph of the gradients so the maps can be differentiated.
        classes: (B, N) the classes whose maps are taken, per input, in row order
            (``ranked_classes``); ``None`` = every class in index order.

    Returns:
        Maps (B, K, H * W), or (B, N, H * W) in ``classes``' order.
    """
    if not x.requires_grad:
        x = x.detach().requires_grad_(True)
    z = model(x)  # (B, K)
    z = LOGIT_SCALE * z / z.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
    if classes is None:
        classes = torch.arange(z.shape[1], device=x.device).expand(x.shape[0], -1)
    grads = []
    for labels in classes.unbind(dim=1):
        loss = F.cross_entropy(z, labels, reduction="sum")
        (g,) = torch.autograd.grad(loss, x, create_graph=create_graph, retain_graph=True)
        grads.append(g)
    g = torch.stack(grads, dim=1)  # (B, K, C, H, W)
    if beta is None:
        maps = g.sign()
    else:
        scale = g.abs().flatten(2).mean(dim=2).clamp_min(1e-12)  # (B, K)
        maps = torch.tanh(beta * g / scale[:, :, None, None, None])
    maps = maps.amax(dim=2)  # (B, K, H, W): the detector's max over colour channels
    return maps.flatten(2)


def ranked_classes(logits: Tensor, rows: int, first: Tensor | None = None) -> Tensor:
    """The ``rows`` classes a top-N detector reads, per input, in its row order.

    The engine reads the most probable classes, most probable first, so its row 0 is the
    predicted class. An attack that wants class ``first`` predicted puts it in row 0 and the
    next most probable after it: the rows the detector will read once the attack succeeds.

    Args:
        logits: (B, K) logits (only their order matters).
        rows: how many classes, at most K.
        first: (B,) a class forced into row 0, or ``None`` (the predicted class).

    Returns:
        (B, rows) class indices.
    """
    order = logits.argsort(dim=1, descending=True)
    if first is None:
        return order[:, :rows]
    rest = order[order != first[:, None]].view(len(order), -1)
    return torch.cat([first[:, None], rest[:, : rows - 1]], dim=1)


def s1_mean(csm: Tensor, k: Tensor) -> Tensor:
    """Mean of ``c_ij`` over pairs ``i < j`` with ``i, j != k``, per input.

    Args:
        csm: (B, K, K) cosine similarity matrices.
        k: (B,) the excluded (predicted) class of each input.

    Returns:
        (B,) S1 means.
    """
    num_classes = csm.shape[1]
    idx = torch.arange(num_classes, device=csm.device)
    upper = idx[:, None] < idx[None, :]  # (K, K)
    off_k = idx[None, :] != k[:, None]  # (B, K)
    mask = upper[None] & off_k[:, :, None] & off_k[:, None, :]  # (B, K, K)
    mask = mask.to(csm.dtype)
    return (csm * mask).sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp_min(1)


class CSA(Attack):
    """PGD on ``0.8 * mean(S1) + 0.2 * CE`` through GGA's CSM of smooth saliency maps.

    The attack runs on ``with_softplus(model)``; success is measured on ``model`` itself.
    S1 excludes k = the class the attack wants predicted: the target when targeted, else the
    current prediction of the iterate (the class the detector will see as predicted), recomputed
    every step. Steps are ``step_size`` along ``sign`` (l_inf) or the normalised gradient (l_2),
    projected into the eps ball and [0, 1], from a random start in the ball. Returned, per input,
    is the best iterate for the attacker (``_keep_best``): a successful one with the highest S1
    mean of the detector's exact CSM, else the unsuccessful one with the highest.

    Against a detector that reads only the ``top_n`` most probable classes (many-class models,
    ``EngineOptions.top_n``), the CSM is the one it reads: k in row 0, then the most probable
    other classes (``ranked_classes``), re-ranked every step; S1 is that matrix without row 0.

    Args:
        model: classifier on [0, 1] pixels (ReLU or Softplus).
        eps: perturbation budget.
        step_size: ``None`` means ``eps / 4`` (the paper's).
        steps: iterations (the paper's 100).
        norm: ``"linf"`` or ``"l2"``.
        beta: sharpness of the ``tanh`` surrogate of ``sign``.
        softplus_beta: sharpness of the Softplus replacing ReLU.
        random_start: start from a random point of the ball.
        target_mode: ``None`` (untargeted) or how targets are chosen.
        seed: seeds the random start and random targets.
        top_n: the classes the attacked detector reads; ``None`` = all.

    Raises:
        AttackParameterError: a parameter is out of range.
    """

    name = "csa"

    def __init__(
        self,
        model: nn.Module,
        eps: float = 0.3,
        step_size: float | None = None,
        steps: int = 100,
        norm: Norm = "linf",
        beta: float = 3.0,
        softplus_beta: float = 10.0,
        random_start: bool = True,
        target_mode: TargetMode | None = None,
        seed: int | None = None,
        top_n: int | None = None,
    ) -> None:
        super().__init__(model, target_mode=target_mode, seed=seed)
        if top_n is not None:
            check_positive("top_n", top_n, integer=True)
        self.top_n = top_n
        self.eps = check_eps(eps, norm)
        self.norm = norm
        self.step_size = self.eps / 4 if step_size is None else step_size
        check_positive("step_size", self.step_size)
        check_positive("steps", steps, integer=True)
        check_positive("beta", beta)
        check_positive("softplus_beta", softplus_beta)
        self.steps = steps
        self.beta = beta
        self.random_start = random_start
        self.smooth_model = with_softplus(model, softplus_beta)

    def objective(self, x: Tensor, y: Tensor, target: Tensor | None) -> tuple[Tensor, Tensor]:
        """The ascent objective per input and its S1 mean, on the Softplus model.

        Args:
            x: inputs (B, C, H, W) requiring grad.
            y: (B,) true labels.
            target: (B,) targets or ``None``.

        Returns:
            ``(objective (B,), s1_mean (B,))``, both differentiable in ``x``.
        """
        logits = self.smooth_model(x)
        if target is None:
            k = logits.argmax(dim=1).detach()
            ce = F.cross_entropy(logits, y, reduction="none")
        else:
            k = target
            ce = -F.cross_entropy(logits, target, reduction="none")
        classes = self._rows(logits, k)
        maps = saliency_maps(self.smooth_model, x, self.beta, create_graph=True, classes=classes)
        s1 = self._s1(cosine_similarity_matrix(maps), k, classes)
        return S1_WEIGHT * s1 + CE_WEIGHT * ce, s1

    def detector_s1(self, x: Tensor, k: Tensor) -> Tensor:
        """S1 mean the detector itself would see: exact sign maps of the original model."""
        with torch.enable_grad():
            classes = self._rows(self.logits(x.detach()), k)
            maps = saliency_maps(self.model, x.detach(), None, create_graph=False, classes=classes)
        return self._s1(cosine_similarity_matrix(maps), k, classes).detach()

    def _rows(self, logits: Tensor, k: Tensor) -> Tensor | None:
        """The classes the detector reads once ``k`` is predicted; ``None`` when it reads all."""
        if self.top_n is None or self.top_n >= logits.shape[1]:
            return None
        return ranked_classes(logits.detach(), self.top_n, first=k)

    @staticmethod
    def _s1(csm: Tensor, k: Tensor, classes: Tensor | None) -> Tensor:
        """S1 of a CSM in class order (k is excluded) or in row order (row 0 is k)."""
        return s1_mean(csm, k if classes is None else torch.zeros_like(k))

    def forward(self, x: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        x_adv = x.clone()
        if self.random_start:
            x_adv = (x + random_in_ball(x, self.eps, self.norm, self.generator)).clamp(0.0, 1.0)
        best = x_adv.clone()
        best_score = torch.full((x.shape[0],), -math.inf, device=x.device)
        for step in range(self.steps + 1):
            best, best_score = self._keep_best(x_adv, y, target, best, best_score)
            if step == self.steps:
                break
            x_adv.requires_grad_(True)
            objective, _ = self.objective(x_adv, y, target)
            grad = self.input_gradient(objective.sum(), x_adv)
            x_adv = x_adv.detach() + self.step_size * steepest_step(grad, self.norm)
            x_adv = (x + project(x_adv - x, self.eps, self.norm)).clamp(0.0, 1.0)
        return best

    def _keep_best(
        self, x_adv: Tensor, y: Tensor, target: Tensor | None, best: Tensor, best_score: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Keep, per input, the iterate the attacker prefers so far.

        Successful iterates (misclassified, or on the target) beat unsuccessful ones; among
        equals, the higher S1 mean of the detector's own (sign) CSM wins. The surrogate's ascent
        is not monotone in the exact S1 (max pooling re-routes gradients as the input moves), so
        the last iterate is not necessarily the best.
        """
        with torch.no_grad():
            pred = self.logits(x_adv).argmax(dim=1)
        hit = pred == target if target is not None else pred != y
        k = target if target is not None else pred
        # S1 means lie in [-1, 1]: adding 4 to successes ranks every success above every failure.
        score = self.detector_s1(x_adv, k) + 4.0 * hit.to(x_adv.dtype)
        better = score > best_score
        best = torch.where(better.view(-1, *([1] * (x_adv.dim() - 1))), x_adv.detach(), best)
        return best, torch.where(better, score, best_score)
