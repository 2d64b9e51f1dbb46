"""How trust is judged: all-class input gradients, the CSM and its features, trust scorers,
baselines and evaluation metrics. Plain PyTorch and numpy; never imports ``service``."""
