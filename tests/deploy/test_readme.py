"""The README's quick start is one a user can follow on an ordinary machine."""

import re

from tests.deploy.conftest import REPO


def test_quick_start_gives_the_cpu_install_and_says_to_wait_for_ready() -> None:
    readme = (REPO / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    dockerfile = (REPO / "Dockerfile").read_text()
    cpu_index = re.search(r"ARG TORCH_INDEX_URL=(\S+)", dockerfile).group(1)
    assert f"pip install torch==2.13.0 --index-url {cpu_index}" in quick  # as the image does
    # Says what start-up does meanwhile: one input, then tuning behind the served model.
    assert "/v2/health/ready" in quick and "in the background" in quick
    assert "-c constraints.txt" in quick
