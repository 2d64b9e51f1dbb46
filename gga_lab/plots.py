"""Figures of the evaluation: ROC curves and, per kind of input, images with saliency and CSM."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np


def plot_roc(
    curves: dict[str, tuple[np.ndarray, np.ndarray, float]], title: str, path: Path
) -> Path:
    """One ROC curve per detector (untrusted inputs as the detected class).

    Args:
        curves: detector -> (false-alarm rate on clean inputs, detection rate, AUROC).
        title: figure title.
        path: PNG to write.

    Returns:
        ``path``.
    """
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (fpr, tpr, auroc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUROC {100 * auroc:.1f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.axvline(0.05, color="grey", linestyle="--", linewidth=0.8)
    ax.set(xlabel="false alarms on clean inputs", ylabel="untrusted inputs detected", title=title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_examples(
    images: np.ndarray,
    saliency: np.ndarray,
    csm: np.ndarray,
    classes: np.ndarray,
    predicted: np.ndarray,
    trust: np.ndarray,
    title: str,
    path: Path,
) -> Path:
    """A row per input: the image, its K saliency maps and its CSM as a heatmap.

    Args:
        images: (R, C, H, W) pixels in [0, 1].
        saliency: (R, K, H*W) maps in [-1, 1].
        csm: (R, K, K) cosine similarity matrices.
        classes: (R, K) class of each map.
        predicted: (R,) predicted class.
        trust: (R,) trust scores.
        title: figure title.
        path: PNG to write.

    Returns:
        ``path``.
    """
    rows, k = saliency.shape[:2]
    h, w = images.shape[2:]
    fig, axes = plt.subplots(
        rows, k + 2, figsize=(1.1 * (k + 2) + 1, 1.25 * rows + 0.6), squeeze=False
    )
    for r in range(rows):
        img = images[r].transpose(1, 2, 0)
        axes[r, 0].imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title(f"pred {predicted[r]}\ntrust {trust[r]:.3f}", fontsize=7)
        for j in range(k):
            axes[r, j + 1].imshow(saliency[r, j].reshape(h, w), cmap="bwr", vmin=-1, vmax=1)
            axes[r, j + 1].set_title(f"class {classes[r, j]}", fontsize=6)
        im = axes[r, k + 1].imshow(csm[r], cmap="viridis", vmin=-1, vmax=1)
        axes[r, k + 1].set_title("CSM", fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(im, ax=axes[:, k + 1].tolist(), shrink=0.6)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
