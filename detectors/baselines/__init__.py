"""Baseline detectors GGA is compared with, each with the ``Detector`` contract.

All score so that higher means less trustworthy, and are fitted or tuned on clean training data
only: maximum softmax probability, ODIN, the energy score, Mahalanobis, deep k-NN and GradNorm.
"""

from detectors.baselines.energy import EnergyScore
from detectors.baselines.gradnorm import GradNorm
from detectors.baselines.knn import KNN
from detectors.baselines.mahalanobis import Mahalanobis
from detectors.baselines.msp import MaxSoftmax
from detectors.baselines.odin import ODIN

__all__ = ["KNN", "ODIN", "EnergyScore", "GradNorm", "Mahalanobis", "MaxSoftmax"]
