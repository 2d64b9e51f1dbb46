"""The same FastAPI app as a Ray Serve application: N model replicas behind a light gateway.

``gga serve --ray`` (or ``serve run service.ray_serve.app:app_builder``) deploys two deployments:

- ``ModelServer`` (``replica.py``): N replicas, each the whole ``create_app(settings)`` app with
  its own models, dynamic batcher, store connection (the shared PostgreSQL) and metrics, driven
  in process through ASGI. Rate limits are shared through Redis (``GGA_REDIS_URL``).
- ``Gateway`` (``gateway.py``): the HTTP ingress behind Ray's proxy. It forwards each request
  to a replica through a deployment handle and answers 503 + ``Retry-After`` when the replica
  died under it (Ray's own proxy would answer 500), and lists every replica's metrics endpoint
  for Prometheus (``/metrics/targets``, an ``http_sd_configs`` source).

In front of both, ``proxy_limit.py`` runs inside Ray's own HTTP proxy and refuses bodies over
``GGA_MAX_BODY_BYTES`` before Ray reads them (``gga serve --ray`` installs it).

Nothing here is imported by ``gga serve`` without ``--ray``: Ray is the ``[ray]`` extra.
"""

APP_NAME = "gga"
MODEL_DEPLOYMENT = "ModelServer"
GATEWAY_DEPLOYMENT = "Gateway"
REPLICA_HEADER = "X-GGA-Replica"
