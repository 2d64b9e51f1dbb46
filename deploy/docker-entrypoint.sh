#!/bin/sh
# Container entry point: apply database migrations, then replace this shell with the command
# (by default `gga serve`), so the service is PID 1 and receives SIGTERM directly for its
# graceful drain.
#
# RUN_MIGRATIONS=0 skips the upgrade: the compose stack runs it once in its `migrate` service,
# so that scaled replicas do not race each other on the schema.
set -eu

if [ "${RUN_MIGRATIONS:-1}" = "1" ] && [ "${1:-}" = "gga" ] && [ "${2:-}" = "serve" ]; then
    echo "docker-entrypoint: gga db upgrade" >&2
    gga db upgrade
fi

exec "$@"
