"""A literal transcription of the reference GGA code, used only to check the engine.

Source: github mad-lab-fau/GGA-Identifying-Untrustworthy-Predictions, ``src/CSM.py``
(``cosine_similarity_maps``, MIT). Kept line for line; the only changes:

- ``device="cuda"`` of the label tensor becomes ``X.device`` (the tests run on CPU);
- ``channel_max`` switch (the reference always reduces the channels; default True keeps that);
- ``return_gradients``: also return the raw input gradients (C, B, Ch, H, W) before the sign,
  so the tests can compare gradients, not only signs;
- the NaN check raises ``FloatingPointError`` instead of a bare ``Exception``.

Note what the reference computes: ``F.cross_entropy`` averages over the batch, so its gradients
are the per-input gradients divided by B (the sign hides it); and ``loss.backward()`` also
accumulates parameter gradients, which it clears with ``model.zero_grad()``.
"""

import torch
import torch.nn.functional as F


def cosine_similarity_maps(
    model: torch.nn.Module,
    X: torch.Tensor,
    sign: bool = True,
    rescale: bool = True,
    channel_max: bool = True,
    return_gradients: bool = False,
):
    deltas = []  # saliency maps w.r.t. all possible output classes
    raw = []
    X_grad = X.clone().requires_grad_()

    logits = model(X_grad)  # network output

    # rescale network output to avoid gradient obfuscation
    if rescale:
        logits = logits / torch.max(torch.abs(logits), 1, keepdim=True).values * 10

    B = logits.shape[0]  # batch size
    classes = logits.shape[-1]  # output classes

    for c in range(classes):
        #  calculate loss and compute gradient w.r.t. the input of the current class
        y = torch.ones(B, device=X.device, dtype=torch.long) * c
        loss = F.cross_entropy(logits, y)
        loss.backward(retain_graph=True)
        grad = X_grad.grad
        raw.append(grad.detach().clone())

        #  take sign of gradient as in the original paper
        if sign:
            grad = torch.sign(grad)
        deltas.append(grad.detach().clone())
        X_grad.grad.zero_()
    model.zero_grad()
    deltas = torch.stack(deltas, dim=0)

    if channel_max:
        #  take only the maximum value of all channels to compute the cosine similarity
        deltas = torch.max(deltas, dim=-3).values

    #  compute cosine similarity matrices
    deltas = deltas.view(classes, B, -1)
    norm = torch.norm(deltas, p=2, dim=2, keepdim=True)
    deltas = deltas / norm
    deltas = deltas.transpose(0, 1)
    csm = torch.matmul(deltas, deltas.transpose(1, 2))

    #  division by zero can lead to NaNs
    if torch.isnan(csm).any():
        raise FloatingPointError("NaNs in CSM!")
    if return_gradients:
        return csm, torch.stack(raw, dim=0)
    return csm
