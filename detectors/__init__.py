"""How trust is judged on every request: all-class input gradients, the CSM and its features,
the trust views, their calibration and fusion, and the pipeline the service calls.

Only what scores a request lives here; fitting, choosing and evaluating it is lab work
(``gga_lab``). Plain PyTorch and numpy: imports ``models`` alone.
"""
