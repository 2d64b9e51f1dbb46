"""Every setting is documented, in the configuration reference and in the operator's table."""

from pathlib import Path

import pytest

from service.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("page", ["configuration.md", "deployment.md"])
def test_every_setting_has_a_row(page: str) -> None:
    text = (DOCS / page).read_text()
    missing = [
        f"GGA_{name.upper()}"
        for name in Settings.model_fields
        if f"| `GGA_{name.upper()}` |" not in text
    ]
    assert not missing, f"{page} lacks rows for {missing}"
