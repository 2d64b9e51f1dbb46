"""``ImportedClassifier``: a user's graph behind the interface the engine and the service expect.

It takes pixels in [0, 1] (the card's mean and std are applied first, as ``models.layers.
Normalize`` does for the zoo), returns logits, and, when the graph could be cut at its
penultimate features (``models.imported.features``), exposes ``embed`` and a linear ``head``
with ``forward(x) == head(embed(x))``: the feature views then come from the same forward pass.
"""

from collections.abc import Sequence

import torch
from torch import fx, nn

from models.imported.features import FeatureCut, cut_graph
from models.layers import Normalize


class ImportedClassifier(nn.Module):
    """An imported graph, frozen in inference mode.

    Args:
        graph: the user's graph (``fx.GraphModule`` or TorchScript), taking normalised input.
        mean: per-channel mean subtracted from [0, 1] pixels before the graph.
        std: per-channel std the pixels are divided by.
        cut: where its penultimate features are, or ``None`` (no feature views).
    """

    def __init__(
        self,
        graph: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        cut: FeatureCut | None = None,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.graph = graph
        self.feature_node = cut.node if cut is not None else None
        if cut is not None:
            assert isinstance(graph, fx.GraphModule)
            self.trunk = cut_graph(graph, cut.node)
            self.fc = cut.head
        for p in self.parameters():
            # Served models are never trained: frozen parameters spare the engine weight
            # gradients, and the graph's own buffers (BatchNorm statistics) never move.
            p.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> "ImportedClassifier":
        """Always inference mode, whatever ``mode``: an imported graph is not trained here.

        The flags are set directly: a ``torch.export`` module refuses ``eval()``, and its
        BatchNorm and dropout already run as traced (the import verifies they run in eval mode).
        """
        for module in self.modules():
            module.training = False
        return self

    @property
    def head(self) -> nn.Linear | None:
        """The final linear layer when the graph was cut (``models.penultimate``), else None."""
        return self.fc if self.feature_node is not None else None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (B, F), the input of ``head``.

        Raises:
            AttributeError: the graph was not cut at its features.
        """
        if self.feature_node is None:
            raise AttributeError("this imported model exposes no penultimate features")
        return self.trunk(self.normalize(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.feature_node is not None:
            return self.fc(self.embed(x))  # (B, num_classes), the same ops as the graph's tail
        return self.graph(self.normalize(x))  # (B, num_classes)
