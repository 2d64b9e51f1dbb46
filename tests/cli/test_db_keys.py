"""``gga db`` and ``gga keys`` against a real SQLite store."""

from pathlib import Path

import pytest

from gga_cli import main
from service.store import Database
from service.store import repository as repo
from service.store.migrate import head


def test_db_upgrade_and_keys_lifecycle(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    url = f"sqlite:///{tmp_path / 'gga_cli.db'}"
    assert main(["db", "--database-url", url, "upgrade"]) == 0
    assert capsys.readouterr().out.strip() == head()

    assert main(["keys", "--database-url", url, "create", "ci"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("gga_")
    key_id = key.split("_")[1]

    assert main(["keys", "--database-url", url, "list"]) == 0
    listed = capsys.readouterr().out
    assert key_id in listed and "active" in listed and "ci" in listed
    assert key.split("_", 2)[2] not in listed  # the secret is never shown again

    assert main(["keys", "--database-url", url, "revoke", key_id]) == 0
    capsys.readouterr()
    db = Database(url)
    try:
        assert repo.get_key(db, key_id)["revoked_at"] is not None
    finally:
        db.dispose()
    # Revoking twice is a user error: one line on stderr, exit code 2.
    assert main(["keys", "--database-url", url, "revoke", key_id]) == 2
    assert "no active key" in capsys.readouterr().err


def test_serve_reports_a_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["serve", "--repo", str(tmp_path), "--models", "nope", "--port", "0"])
    assert code == 2
    assert "nope" in capsys.readouterr().err
