"""Baseline detectors GGA is compared with, each with the ``Detector`` contract.

All score so that higher means less trustworthy, and are fitted or tuned on clean training data
only: maximum softmax probability, ODIN, the energy score, Mahalanobis, deep k-NN and GradNorm.
"""

from gga_lab.baselines.energy import EnergyScore
from gga_lab.baselines.gradnorm import GradNorm
from gga_lab.baselines.knn import KNN
from gga_lab.baselines.mahalanobis import Mahalanobis
from gga_lab.baselines.msp import MaxSoftmax
from gga_lab.baselines.odin import ODIN

__all__ = ["KNN", "ODIN", "EnergyScore", "GradNorm", "Mahalanobis", "MaxSoftmax"]
