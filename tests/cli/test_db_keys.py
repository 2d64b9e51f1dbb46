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
    assert key_id in listed and "active" in listed and "ci" in listed and "predict" in listed
    assert key.split("_", 2)[2] not in listed  # the secret is never shown again

    assert main(["keys", "--database-url", url, "create", "ops", "--scope", "admin"]) == 0
    admin_id = capsys.readouterr().out.strip().split("_")[1]
    assert main(["keys", "--database-url", url, "scope", key_id, "read"]) == 0
    assert "read scope" in capsys.readouterr().out
    db = Database(url)
    try:
        assert repo.get_key(db, admin_id)["scope"] == "admin"
        assert repo.get_key(db, key_id)["scope"] == "read"
    finally:
        db.dispose()
    with pytest.raises(SystemExit):  # argparse refuses a scope that does not exist
        main(["keys", "--database-url", url, "create", "x", "--scope", "root"])
    capsys.readouterr()

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


def test_the_command_offers_exactly_the_service_scopes() -> None:
    from gga_cli.keys import SCOPES
    from service.access import Scope

    assert set(SCOPES) == {s.value for s in Scope}


def test_serve_reports_a_missing_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["serve", "--repo", str(tmp_path), "--models", "nope", "--port", "0"])
    assert code == 2
    assert "nope" in capsys.readouterr().err


def test_serve_ray_refuses_open_control_on_a_public_address(tmp_path: Path) -> None:
    # The driver checks before deploying what each replica would refuse at its start.
    from gga_cli.serve_ray import _check_model_control
    from service.access import UnsafeModelControl
    from service.auth import create_key
    from service.settings import Settings

    url = f"sqlite:///{tmp_path / 'ray.db'}"
    public = Settings(_env_file=None, database_url=url, host="0.0.0.0", model_control="explicit")
    db = Database(url)
    db.upgrade()
    try:
        with pytest.raises(UnsafeModelControl, match="admin key"):
            _check_model_control(public)
        _check_model_control(public.model_copy(update={"host": "127.0.0.1"}))
        _check_model_control(public.model_copy(update={"model_control": "none"}))
        create_key(db, "operator")
        _check_model_control(public)  # keys on: admin keys control it
    finally:
        db.dispose()
