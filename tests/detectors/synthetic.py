"""Synthetic ``ViewInputs``: a clean cluster and a shifted one that every view can tell apart."""

import numpy as np

from detectors.squeeze import SQUEEZERS
from detectors.views import ViewInputs

NUM_CLASSES = 4
FEATURES = 16
BLOCK_WIDTHS = (6, 12)


def view_inputs(n: int, shifted: bool, seed: int) -> ViewInputs:
    """``n`` inputs: clean ones are confident, near their class's features and CSM pattern;
    shifted ones are unconfident, far from every class, their CSM and GGA features moved, and
    squeezing moves their logits much more than a clean input's, and their block features
    lose the class structure."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 3, (NUM_CLASSES, FEATURES))
    predicted = rng.integers(NUM_CLASSES, size=n)
    logits = rng.normal(0, 0.3, (n, NUM_CLASSES))
    margin = 0.5 if shifted else 6.0
    logits[np.arange(n), predicted] += margin
    features = centres[predicted] + rng.normal(0, 1, (n, FEATURES))
    if shifted:
        # Weak and undirected: far from every class, in a direction no class has, small norm.
        features = rng.normal(1.0, 0.1, (n, FEATURES)) * 0.5
    features = np.abs(features)  # ReLU-like features (GradNorm reads their L1 norm)
    base = 0.6 if not shifted else 0.1
    csm = np.full((n, NUM_CLASSES, NUM_CLASSES), base) + rng.normal(
        0, 0.05, (n, NUM_CLASSES, NUM_CLASSES)
    )
    csm = (csm + csm.transpose(0, 2, 1)) / 2
    csm[:, np.arange(NUM_CLASSES), np.arange(NUM_CLASSES)] = 1.0
    gga = rng.normal(2.0 if shifted else 0.0, 1.0, (n, 10))
    classes = np.tile(np.arange(NUM_CLASSES), (n, 1))
    wobble = 2.0 if shifted else 0.1
    squeezed = logits[:, None, :] + rng.normal(0, wobble, (n, len(SQUEEZERS), NUM_CLASSES))
    blocks = tuple(_block(predicted, shifted, width, rng) for width in BLOCK_WIDTHS)
    return ViewInputs(
        logits=logits,
        predicted=predicted.astype(np.int64),
        gga=gga,
        csm=csm.astype(np.float32),
        classes=classes,
        penultimate=features.astype(np.float32),
        squeezed=squeezed,
        blocks=blocks,
    )


def _block(predicted: np.ndarray, shifted: bool, width: int, rng: np.random.Generator):
    """One block's channel means: near the class's centre, or (shifted) the block's mean level
    with the class structure gone, as an input unusual in that layer would be."""
    centres = np.random.default_rng(width).normal(0, 2, (NUM_CLASSES, width))
    if shifted:
        return (centres.mean(axis=0) + rng.normal(0, 0.3, (len(predicted), width))).astype(
            np.float32
        )
    return (centres[predicted] + rng.normal(0, 0.5, (len(predicted), width))).astype(np.float32)
