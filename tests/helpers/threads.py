"""A module-scoped, autouse fixture: torch on one intra-op thread while the module runs.

The CI box has 2 shared cores; one intra-op thread avoids OpenMP oversubscription stalls in the
modules that run many small engine calls. Use it with ``from tests.helpers.threads import
one_thread  # noqa: F401`` (pytest finds fixtures imported into a test module).
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
