"""Ways to compute the K input-gradient rows ``J^T v_k`` of a batch: same numbers, different speed.

Every strategy takes the model, a batch ``x`` and a ``Plan`` and returns the unscaled logits
(B, C), the selected classes (B, K), the raw input gradients (B, K, C, H, W) and, for a model
that exposes them (``models.penultimate``), the penultimate features (B, F) of the same forward
pass, so the feature-based trust views cost no forward of their own. Gradients are
taken with ``torch.autograd.grad`` (or ``torch.func``) with respect to the input only, so no
parameter ``.grad`` is ever written and autograd prunes the weight-gradient kernels. With a
``Plan.cut`` (``detectors.block_cut``) they are taken with respect to that block's activation
instead, (B, K, C_a, H_a, W_a), and the backward stops there: the layers before it run without
a graph.

- ``batched``: one forward, then one vmapped backward over the K cotangents
  (``is_grads_batched=True``), chunked over rows to bound memory. Best at medium and large
  batches: the K backward passes become one wide pass.
- ``vmap``: the same idea through ``torch.func.vjp`` + ``torch.func.vmap``.
- ``loop``: one forward, then K input-only VJPs on the retained graph. The baseline the
  *limit* of the benchmark is made of.
- ``replicate``: copy the batch K times and do one forward and one backward of the copies,
  copy k carrying cotangent ``v_k``. K times the forward work, but on CPU at batch 1 one wide
  forward and backward beat K thin backward passes by far.

Which one wins depends on model, device and batch size: ``detectors.autotune`` measures.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from detectors.block_cut import BlockCut
from detectors.saliency import cotangents, select_rows
from models.penultimate import logits_and_features

# Bound on (rows in one pass) x (batch) for the strategies that widen the batch: the vmapped
# backward and the replicated forward hold this many copies of every activation at once.
DEFAULT_MAX_ROWS_TIMES_BATCH = 2048


@dataclass(frozen=True)
class Plan:
    """What to compute, shared by every strategy.

    Attributes:
        num_rows: K, the number of classes per input (C, or ``top_n`` clipped to C).
        top_n: ``None`` for all classes in index order, else the most probable first.
        rescale: the reference's logit rescaling before the loss.
        max_rows_times_batch: memory bound of the widening strategies (see above).
        cut: where the gradients are taken: ``None`` for the input, else a block's activation.
    """

    num_rows: int
    top_n: int | None
    rescale: bool
    max_rows_times_batch: int = DEFAULT_MAX_ROWS_TIMES_BATCH
    cut: BlockCut | None = None

    def rows_per_pass(self, batch: int) -> int:
        """How many rows one widened pass may hold at this batch size (at least 1)."""
        return max(1, min(self.num_rows, self.max_rows_times_batch // max(batch, 1)))


# logits (B, C), rows (B, K), grads (B, K, C, H, W) (at a cut: (B, K, C_a, H_a, W_a)),
# penultimate features (B, F) or None
StrategyResult = tuple[Tensor, Tensor, Tensor, Tensor | None]
StrategyFn = Callable[[nn.Module, Tensor, Plan], StrategyResult]


def _forward(
    model: nn.Module, x: Tensor, cut: BlockCut | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The leaf the gradients are taken at (a copy of ``x``, or of the cut's activation) that
    requires grad, the logits on it (graph kept), the features."""
    if cut is not None:
        return cut.forward(model, x)
    x_in = x.detach().requires_grad_(True)
    logits, features = logits_and_features(model, x_in)
    return x_in, logits, None if features is None else features.detach()


def _rows_and_cotangents(logits: Tensor, plan: Plan) -> tuple[Tensor, Tensor]:
    z = logits.detach()
    rows = select_rows(z, plan.top_n)
    return rows, cotangents(z, rows, plan.rescale)  # (B, K), (B, K, C)


def batched(model: nn.Module, x: Tensor, plan: Plan) -> StrategyResult:
    """One forward, then the K VJPs as vmapped backward passes of ``rows_per_pass`` rows each."""
    x_in, logits, features = _forward(model, x, plan.cut)
    rows, v = _rows_and_cotangents(logits, plan)
    v = v.transpose(0, 1)  # (K, B, C): the batched dimension comes first
    step = plan.rows_per_pass(x.shape[0])
    chunks = []
    for start in range(0, plan.num_rows, step):
        last = start + step >= plan.num_rows
        (g,) = torch.autograd.grad(
            logits, x_in, v[start : start + step], retain_graph=not last, is_grads_batched=True
        )
        chunks.append(g)
    grads = torch.cat(chunks, dim=0) if len(chunks) > 1 else chunks[0]  # (K, B, C, H, W)
    return logits.detach(), rows, grads.transpose(0, 1), features


def vmap(model: nn.Module, x: Tensor, plan: Plan) -> StrategyResult:
    """``torch.func.vjp`` once, then ``torch.func.vmap`` of its VJP over chunks of rows."""
    # has_aux hands the features back unwrapped from the functional transform. At a cut the
    # prefix runs twice without a graph: for the activation here, and inside the transform.
    point = x.detach() if plan.cut is None else plan.cut.activation(model, x)
    logits, vjp_fn, aux = torch.func.vjp(
        lambda at: _with_aux(model, x, plan.cut, at), point, has_aux=True
    )
    features = aux if aux.dim() == 2 else None
    rows, v = _rows_and_cotangents(logits, plan)
    v = v.transpose(0, 1)  # (K, B, C)
    step = plan.rows_per_pass(x.shape[0])
    batched_vjp = torch.func.vmap(vjp_fn)
    chunks = [batched_vjp(v[start : start + step])[0] for start in range(0, plan.num_rows, step)]
    grads = torch.cat(chunks, dim=0) if len(chunks) > 1 else chunks[0]  # (K, B, C, H, W)
    return logits.detach(), rows, grads.transpose(0, 1), features


def _with_aux(
    model: nn.Module, x: Tensor, cut: BlockCut | None, at: Tensor
) -> tuple[Tensor, Tensor]:
    """Logits at ``at`` (the input, or the cut's activation) and the features as ``vjp``'s aux
    output (an empty tensor stands for no features)."""
    if cut is None:
        logits, features = logits_and_features(model, at)
    else:
        logits, features = cut.run(model, x, lambda _: at)
    return logits, logits.new_empty(0) if features is None else features.detach()


def loop(model: nn.Module, x: Tensor, plan: Plan) -> StrategyResult:
    """One forward, then K input-only VJPs sharing its retained graph."""
    x_in, logits, features = _forward(model, x, plan.cut)
    rows, v = _rows_and_cotangents(logits, plan)
    grads = []
    for k in range(plan.num_rows):
        (g,) = torch.autograd.grad(logits, x_in, v[:, k], retain_graph=k < plan.num_rows - 1)
        grads.append(g)
    return logits.detach(), rows, torch.stack(grads, dim=1), features  # grads (B, K, C, H, W)


def replicate(model: nn.Module, x: Tensor, plan: Plan) -> StrategyResult:
    """Forward and backward the batch copied once per row; copy k carries cotangent ``v_k``.

    The rows (classes) come from the first chunk's first copy; every copy's cotangent uses its
    own logits, so each gradient is taken exactly where that copy's forward went. At a cut the
    prefix runs on every copy too, without a graph.
    """
    batch = x.shape[0]
    step = plan.rows_per_pass(batch)
    logits_out: Tensor | None = None
    features_out: Tensor | None = None
    rows: Tensor | None = None
    chunks = []
    for start in range(0, plan.num_rows, step):
        k = min(step, plan.num_rows - start)
        copies = x.repeat(k, *([1] * (x.dim() - 1)))  # copy-major
        x_in, z, features = _forward(model, copies, plan.cut)
        if rows is None:
            logits_out = z[:batch].detach()
            features_out = None if features is None else features[:batch]
            rows = select_rows(logits_out, plan.top_n)
        copy_rows = rows[:, start : start + k].transpose(0, 1).reshape(k * batch, 1)
        v = cotangents(z.detach(), copy_rows, plan.rescale).squeeze(1)  # (k*B, C)
        (g,) = torch.autograd.grad(z, x_in, v)
        chunks.append(g.view(k, batch, *g.shape[1:]))
    grads = torch.cat(chunks, dim=0) if len(chunks) > 1 else chunks[0]  # (K, B, C, H, W)
    assert logits_out is not None and rows is not None  # num_rows >= 1
    return logits_out, rows, grads.transpose(0, 1), features_out


STRATEGIES: dict[str, StrategyFn] = {
    "batched": batched,
    "vmap": vmap,
    "loop": loop,
    "replicate": replicate,
}


def get_strategy(name: str) -> StrategyFn:
    """The strategy called ``name``.

    Raises:
        ValueError: unknown name; the message lists the known ones.
    """
    try:
        return STRATEGIES[name]
    except KeyError:
        known = ", ".join(sorted(STRATEGIES))
        raise ValueError(
            f"unknown gradient strategy {name!r}; use 'auto' or one of: {known}"
        ) from None


def worth_trying(name: str, batch: int, num_rows: int) -> bool:
    """Whether the auto-tuner should measure ``name`` at this size.

    Replication multiplies the forward work by K; past a few hundred images per pass it never
    wins and only costs warm-up time and memory.
    """
    if name == "replicate":
        return batch * num_rows <= 512
    return True
