"""The functional pieces of GGA's saliency: which classes, which cotangents, which maps.

GGA needs ``grad_x CE(F(x), i)`` for every class ``i`` (or the ``top_n`` most probable ones).
With ``z = F(x)`` and ``J = dz/dx`` that gradient is the vector-Jacobian product ``J^T v_i`` with
``v_i = dCE(r(z), i)/dz``, where ``r`` is the reference code's logit rescaling
``r(z) = 10 z / max_j |z_j|`` (or the identity). This module computes the rows to take and
their cotangents ``v_i`` in closed form from the detached logits (a (B, K, C) tensor, tiny next
to the model), and turns raw input gradients into maps (sign, channel max). The strategies in
``detectors.strategies`` do the expensive part, ``J^T v``.
"""

import torch
from torch import Tensor

RESCALE_TARGET = 10.0  # the reference code's max |logit| after rescaling


def select_rows(logits: Tensor, top_n: int | None) -> Tensor:
    """The classes whose saliency is computed, per input.

    Args:
        logits: (B, C) logits (detached).
        top_n: ``None`` for every class in index order, else the ``top_n`` most probable classes
            ordered by probability, most probable first (clipped to C).

    Returns:
        (B, K) int64 class indices.

    Raises:
        ValueError: ``top_n`` is not positive.
    """
    batch, num_classes = logits.shape
    if top_n is None:
        return torch.arange(num_classes, device=logits.device).expand(batch, num_classes)
    if top_n <= 0:
        raise ValueError(f"top_n must be a positive number of classes or None, got {top_n}")
    # Softmax is monotone in the logits, so ranking the logits ranks the probabilities.
    return logits.topk(min(top_n, num_classes), dim=1, largest=True, sorted=True).indices


def rescale_logits(logits: Tensor) -> Tensor:
    """``10 z / max_j |z_j|`` per input, as the reference code does before the loss.

    An all-zero logit vector (no scale to divide by) is left at zero instead of becoming NaN.

    Args:
        logits: (B, C) logits.

    Returns:
        (B, C) rescaled logits; differentiable, like the reference's.
    """
    scale = logits.abs().max(dim=1, keepdim=True).values
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return logits / safe * RESCALE_TARGET


def cotangents(logits: Tensor, rows: Tensor, rescale: bool) -> Tensor:
    """``dCE(r(z), i)/dz`` for each input and each selected class ``i``, in closed form.

    Without rescaling this is ``softmax(z) - e_i``. With it, the chain rule goes through the
    rescaling, max included, exactly as autograd does in the reference code: for
    ``s = |z_m|`` (``m`` the index ``torch.max`` picks), ``g = softmax(r(z)) - e_i``,

        ``v = (10 / s) g - (10 sign(z_m) <g, z> / s^2) e_m``.

    No host synchronisation: everything is tensor arithmetic on ``logits``' device.

    Args:
        logits: (B, C) logits, detached.
        rows: (B, K) int64 class indices (from ``select_rows``).
        rescale: apply the reference rescaling.

    Returns:
        (B, K, C) cotangents, same dtype as ``logits``.
    """
    num_classes = logits.shape[1]
    one_hot = torch.nn.functional.one_hot(rows, num_classes).to(logits.dtype)  # (B, K, C)
    if not rescale:
        return torch.softmax(logits, dim=1).unsqueeze(1) - one_hot
    scale, argmax = logits.abs().max(dim=1, keepdim=True)  # (B, 1) each
    # All-zero logits: divide by 1 as rescale_logits does; sign(z_m) = 0 drops the second term.
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    g = torch.softmax(logits / safe * RESCALE_TARGET, dim=1).unsqueeze(1) - one_hot  # (B, K, C)
    g_dot_z = (g * logits.unsqueeze(1)).sum(dim=2, keepdim=True)  # (B, K, 1)
    coef = RESCALE_TARGET * torch.sign(logits.gather(1, argmax)) / safe**2  # (B, 1)
    e_m = torch.nn.functional.one_hot(argmax.squeeze(1), num_classes).to(logits.dtype)
    first = g * (RESCALE_TARGET / safe).unsqueeze(2)
    return first - (coef.unsqueeze(2) * g_dot_z) * e_m.unsqueeze(1)


def to_maps(grads: Tensor, sign: bool, channel_max: bool) -> Tensor:
    """Input gradients to the maps GGA compares.

    Args:
        grads: (B, K, C, H, W) input gradients.
        sign: take the elementwise sign (the reference's ``torch.sign``: -1, 0 or 1).
        channel_max: max over the colour channels afterwards, as the reference does, so a pixel
            of a sign map is -1, 0 or 1 whatever the number of channels.

    Returns:
        (B, K, D) float32 maps, D = H*W with ``channel_max`` else C*H*W.
    """
    maps = torch.sign(grads) if sign else grads
    if channel_max:
        maps = maps.amax(dim=2)
    return maps.flatten(2).to(torch.float32)
