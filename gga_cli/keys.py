"""``gga keys create|list|revoke|scope``: manage the service's API keys in the result store."""

import argparse
import sys

from service.settings import get_settings

# The scopes of service/access.py (importing it here would load the service for `gga --help`).
SCOPES = ("predict", "read", "admin")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("keys", help="create, list and revoke API keys")
    p.add_argument("--database-url", help="SQLAlchemy URL of the store (default GGA_DATABASE_URL)")
    sub = p.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = sub.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("name", nargs="?", default="default", help="a label for the key")
    create.add_argument(
        "--scope",
        choices=SCOPES,
        default="predict",
        help="predict (default): classify and read back its own predictions; read: models, "
        "statistics and every key's predictions, nothing that writes (dashboards); admin: "
        "everything, and loading and unloading models when GGA_MODEL_CONTROL=explicit",
    )
    sub.add_parser("list", help="list keys (ids, scopes and names, never secrets)")
    revoke = sub.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("key_id")
    scope = sub.add_parser("scope", help="give an active key another scope")
    scope.add_argument("key_id")
    scope.add_argument("scope", choices=SCOPES)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from service.access import Scope
    from service.auth import create_key
    from service.errors import ServiceError
    from service.store import Database
    from service.store import repository as repo

    settings = get_settings(database_url=args.database_url)
    db = Database(settings.database_url)
    try:
        db.upgrade()
        if args.keys_command == "create":
            key_id, key = create_key(
                db, args.name, pepper=settings.key_pepper, scope=Scope(args.scope)
            )
            sys.stdout.write(f"{key}\n")
            sys.stderr.write(
                f"created {args.scope} key {key_id} ({args.name}); store it now, it cannot be "
                "shown again\n"
            )
        elif args.keys_command == "list":
            for row in repo.list_keys(db):
                state = "revoked" if row["revoked_at"] else "active"
                created = row["created_at"].isoformat(timespec="seconds")
                sys.stdout.write(
                    f"{row['id']}  {state:7}  {row['scope']:7}  {created}  {row['name']}\n"
                )
        elif args.keys_command == "scope":
            if not repo.set_key_scope(db, args.key_id, args.scope):
                raise ServiceError(f"no active key {args.key_id!r}; see `gga keys list`")
            sys.stdout.write(
                f"{args.key_id} now has the {args.scope} scope (servers apply it within "
                f"GGA_AUTH_CACHE_S, {settings.auth_cache_s:g} s)\n"
            )
        elif not repo.revoke_key(db, args.key_id):
            raise ServiceError(f"no active key {args.key_id!r}; see `gga keys list`")
        else:
            sys.stdout.write(
                f"revoked {args.key_id} (servers refuse it within GGA_AUTH_CACHE_S, "
                f"{settings.auth_cache_s:g} s)\n"
            )
    finally:
        db.dispose()
    return 0
