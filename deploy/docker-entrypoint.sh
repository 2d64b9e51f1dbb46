#!/bin/sh
# Container entry point: replace this shell with the command (by default `gga serve`), so the
# service is PID 1 and receives SIGTERM directly for its graceful drain.
#
# Migrations are the service's own business: `gga serve` migrates at start under a lock (a
# PostgreSQL advisory lock, so replicas starting together take turns) unless
# GGA_RUN_MIGRATIONS=false, as in the compose stack, whose one-shot `migrate` job runs
# `gga db upgrade` before any replica starts.
set -eu

exec "$@"
