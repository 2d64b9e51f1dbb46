"""Baseline detectors GGA is compared with, each with the ``Detector`` contract.

All score so that higher means less trustworthy, and are fitted or tuned on clean training data
only: maximum softmax probability, ODIN, the energy score and Mahalanobis.
"""

from detectors.baselines.energy import EnergyScore
from detectors.baselines.mahalanobis import Mahalanobis
from detectors.baselines.msp import MaxSoftmax
from detectors.baselines.odin import ODIN

__all__ = ["ODIN", "EnergyScore", "Mahalanobis", "MaxSoftmax"]
