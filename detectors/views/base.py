"""What a trust view reads, and the contract every view follows.

A *view* is one way of looking at a prediction that turns it into an outlier score (higher =
less trustworthy): the geometry of the all-class gradients (GGA), the logits, or the penultimate
features. Every view reads only what the gradient engine's one forward and all-class backward
already computed (``ViewInputs``), so adding views costs arithmetic, not passes through the
model. Views follow the ``Detector`` contract: ``fit_features(inputs)`` on clean, correctly
classified training inputs returns the view, ``predict_features(inputs)`` gives scores, JSON
parameters through ``get_params``/``from_params``, no pickle.
"""

import abc
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Self

import numpy as np
import torch

from detectors.base import Detector, DetectorFitError
from detectors.features import gga_features


class ViewUnavailableError(DetectorFitError):
    """A view needs something this model does not expose (penultimate features)."""


@dataclass
class ViewInputs:
    """Everything the views read about N inputs, as numpy arrays.

    Attributes:
        logits: (N, C) unscaled logits.
        predicted: (N,) int64 predicted classes.
        gga: (N, 10) GGA features (``detectors.features.FEATURE_NAMES``).
        csm: (N, K, K) cosine similarity matrices.
        classes: (N, K) int64 class of each CSM row.
        penultimate: (N, F) penultimate features, or ``None`` for a model without them.
        squeezed: (N, S, C) logits of the feature-squeezed copies (``detectors.squeeze``), or
            ``None`` when the engine did not compute them.
        blocks: one (N, C_b) array of channel means per block of the model
            (``models.blocks``), or ``None`` when the engine did not compute them.
    """

    logits: np.ndarray
    predicted: np.ndarray
    gga: np.ndarray
    csm: np.ndarray
    classes: np.ndarray
    penultimate: np.ndarray | None = None
    squeezed: np.ndarray | None = None
    blocks: tuple[np.ndarray, ...] | None = None

    def __len__(self) -> int:
        return len(self.logits)

    def take(self, index: Any) -> "ViewInputs":
        """The inputs at ``index`` (a boolean mask or integer indices)."""

        def rows(value: Any) -> Any:
            if isinstance(value, tuple):  # blocks: the same rows of every block
                return tuple(v[index] for v in value)
            return None if value is None else value[index]

        return ViewInputs(**{f.name: rows(getattr(self, f.name)) for f in fields(self)})

    def leading_rows(self, n: int) -> "ViewInputs":
        """What an engine reading only the top ``n`` classes would have given.

        Rows read for the top N are ordered by probability, most probable first, and each row's
        map does not depend on which other rows were read: the top-``n`` CSM is the leading
        ``n x n`` block of the top-N one. The ten GGA features are computed again from it;
        everything else is the same.

        Raises:
            ValueError: ``n`` is below 1 or above the rows read.
        """
        if not 1 <= n <= self.csm.shape[1]:
            raise ValueError(f"cannot keep {n} of {self.csm.shape[1]} CSM rows")
        csm = np.ascontiguousarray(self.csm[:, :n, :n])
        classes = self.classes[:, :n]
        predicted_row = (classes == self.predicted[:, None]).argmax(axis=1)
        features = gga_features(torch.from_numpy(csm), torch.from_numpy(predicted_row))
        return replace(self, csm=csm, classes=classes, gga=features.numpy().astype(np.float64))

    @classmethod
    def concat(cls, parts: list["ViewInputs"]) -> "ViewInputs":
        """One ``ViewInputs`` of several, in order.

        Raises:
            ValueError: ``parts`` is empty.
        """
        if not parts:
            raise ValueError("nothing to concatenate")
        values = {}
        for f in fields(cls):
            arrays = [getattr(p, f.name) for p in parts]
            if any(a is None for a in arrays):
                values[f.name] = None
            elif isinstance(arrays[0], tuple):  # blocks: each block joined on its own
                values[f.name] = tuple(np.concatenate(block) for block in zip(*arrays, strict=True))
            else:
                values[f.name] = np.concatenate(arrays)
        return cls(**values)


class View(Detector):
    """One view of a prediction: an outlier score from ``ViewInputs``; higher = less trusted.

    Subclasses set ``name`` (as in ``detector.json`` and the API), ``title`` (what a user reads:
    "gradient geometry"), ``needs_penultimate``, and implement ``_fit``, ``_score``,
    ``get_params`` and ``from_params``.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    needs_penultimate: ClassVar[bool] = False
    needs_squeezed: ClassVar[bool] = False  # the engine's squeezed logits (EngineOptions.squeeze)
    needs_blocks: ClassVar[bool] = False  # the engine's block features (EngineOptions.blocks)

    def __init__(self) -> None:
        self._fitted = False

    @property
    def kind(self) -> str:
        return self.name

    @property
    def fitted(self) -> bool:
        return self._fitted

    def fit_features(self, z: ViewInputs, y: Any = None) -> Self:
        """Fit on clean, correctly classified inputs (their predicted class is their label).

        Raises:
            ViewUnavailableError: the view needs penultimate features and ``z`` has none.
            DetectorFitError: too few inputs, or non-finite values.
        """
        self._check_available(z)
        self._fit(z)
        self._fitted = True
        return self

    def predict_features(self, z: ViewInputs) -> np.ndarray:
        """Outlier scores (N,) as float64; NaN where the view is undefined for an input."""
        self._check_fitted()
        self._check_available(z)
        return np.asarray(self._score(z), dtype=np.float64).reshape(-1)

    def _check_available(self, z: ViewInputs) -> None:
        if self.needs_penultimate and z.penultimate is None:
            raise ViewUnavailableError(
                f"the {self.name!r} view needs penultimate features, which this model does not "
                "expose (embed(x) and a linear head; see models/penultimate.py); fit without it: "
                "gga fit MODEL --views ... leaving it out"
            )
        if self.needs_squeezed and z.squeezed is None:
            raise ViewUnavailableError(
                f"the {self.name!r} view needs the logits of squeezed inputs, which the engine "
                "computes with EngineOptions(squeeze=True) (gga fit sets it when it fits the view)"
            )
        if self.needs_blocks and z.blocks is None:
            raise ViewUnavailableError(
                f"the {self.name!r} view needs the features of the model's blocks, which the "
                "engine computes with EngineOptions(blocks=True) (gga fit sets it when it fits "
                "the view)"
            )

    @abc.abstractmethod
    def _fit(self, z: ViewInputs) -> None:
        """Fit on ``z`` (clean, correctly classified)."""

    @abc.abstractmethod
    def _score(self, z: ViewInputs) -> np.ndarray:
        """Outlier scores (N,)."""

    @abc.abstractmethod
    def get_params(self) -> dict[str, Any]:
        """The fitted state, JSON-ready."""

    @classmethod
    @abc.abstractmethod
    def from_params(cls, params: dict[str, Any]) -> Self:
        """A fitted view from ``get_params()`` output."""


def fitted_view(view: View) -> View:
    """Mark a view rebuilt from parameters as fitted (used by ``from_params``)."""
    view._fitted = True
    return view
