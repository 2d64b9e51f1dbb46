"""deploy/kuberay/rayservice.yaml, checked offline as kubeconform would check it.

kubeconform validates a custom resource against its CRD's schema, fetched from the network. Here,
offline: the RayService fields against a JSON schema of the subset of KubeRay's ``ray.io/v1``
API the manifest uses (types, required fields, no unknown keys), ``serveConfigV2`` against Ray
Serve's own config schema (``ray.serve.schema.ServeDeploySchema``, the one KubeRay hands it to),
and every pod template strictly against the Kubernetes 1.37 schemas (kubernetes-validate).
"""

import jsonschema
import pytest
import yaml

from service.settings import Settings
from tests.deploy.conftest import DEPLOY

MANIFEST = DEPLOY / "kuberay" / "rayservice.yaml"

_START_PARAMS = {"type": "object", "additionalProperties": {"type": "string"}}
_GROUP = {
    "type": "object",
    "required": ["rayStartParams", "template"],
    "properties": {
        "rayStartParams": _START_PARAMS,
        "template": {"type": "object", "required": ["spec"]},
        "groupName": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "replicas": {"type": "integer", "minimum": 0},
        "minReplicas": {"type": "integer", "minimum": 0},
        "maxReplicas": {"type": "integer", "minimum": 0},
        "serviceType": {"type": "string"},
    },
    "additionalProperties": False,
}
RAYSERVICE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayService"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "required": ["serveConfigV2", "rayClusterConfig"],
            "properties": {
                "serveConfigV2": {"type": "string"},
                "rayClusterConfig": {
                    "type": "object",
                    "required": ["headGroupSpec"],
                    "properties": {
                        "rayVersion": {"type": "string"},
                        "enableInTreeAutoscaling": {"type": "boolean"},
                        "headGroupSpec": {
                            **_GROUP,
                            "required": ["rayStartParams", "template"],
                            "properties": {
                                k: v
                                for k, v in _GROUP["properties"].items()
                                if k in ("rayStartParams", "template", "serviceType")
                            },
                        },
                        "workerGroupSpecs": {
                            "type": "array",
                            "items": {
                                **_GROUP,
                                "required": ["groupName", "rayStartParams", "template"],
                            },
                        },
                    },
                    "additionalProperties": False,
                },
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def test_rayservice_fields_match_the_api(manifest: dict) -> None:
    jsonschema.validate(manifest, RAYSERVICE_SCHEMA)
    for group in manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def test_a_manifest_with_a_mistake_is_refused(manifest: dict) -> None:
    broken = yaml.safe_load(MANIFEST.read_text())
    broken["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replica"] = 2  # typo
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, RAYSERVICE_SCHEMA)


def test_serve_config_passes_ray_serves_own_schema(manifest: dict) -> None:
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(yaml.safe_load(manifest["spec"]["serveConfigV2"]))
    (app,) = config.applications
    assert app.import_path == "service.ray_serve.app:app_builder" and app.route_prefix == "/"
    # Every GGA_* variable names a real setting (a typo would be silently ignored).
    fields = {f"GGA_{name.upper()}" for name in Settings.model_fields}
    env = app.runtime_env["env_vars"]
    assert set(env) <= fields, set(env) - fields
    Settings(_env_file=None, **{k.removeprefix("GGA_").lower(): v for k, v in env.items()})
    # The import path resolves in this code base.
    from service.ray_serve.app import app_builder

    assert callable(app_builder)
    # The proxies get the body limit gga serve --ray gives them (service.ray_serve.app).
    from service.ray_serve.proxy_limit import limit_from_env, proxy_env

    proxy = config.controller_options.runtime_env["env_vars"]
    assert set(proxy_env(10)) == set(proxy) and limit_from_env(proxy) == 10 * 1024 * 1024


def test_pod_templates_pass_the_kubernetes_schemas(manifest: dict) -> None:
    import kubernetes_validate

    cluster = manifest["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        pod_template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "gga-serve"},
            "template": group["template"],
        }
        kubernetes_validate.validate(pod_template, "1.37.0", strict=True)
        env = {e["name"] for c in group["template"]["spec"]["containers"] for e in c["env"]}
        assert {"GGA_DATABASE_URL", "GGA_REDIS_URL", "GGA_KEY_PEPPER"} <= env


def test_worker_grace_period_outlasts_the_shutdown_window(manifest: dict) -> None:
    config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    window = float(config["applications"][0]["runtime_env"]["env_vars"]["GGA_SHUTDOWN_TIMEOUT_S"])
    for group in manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        assert group["template"]["spec"]["terminationGracePeriodSeconds"] >= window + 5
