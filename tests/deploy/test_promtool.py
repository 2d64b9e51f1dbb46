"""promtool: the Prometheus configuration and alert rules are valid and their unit tests pass."""

import re
import subprocess

import yaml

from tests.deploy.conftest import PROMETHEUS_DIR, require_tool, run_tool

ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
REQUIRED_ALERTS = {
    "GGAHighFlagRate",
    "GGAHighErrorRate",
    "GGAQueueSaturated",
    "GGAHighLatencyP95",
    "GGATargetDown",
    "GGANoReplicaUp",
    "GGABatchFailures",
    "GGAStoreUnreachable",
    "GGAFalseAlarmsAboveAlpha",
}


def test_check_config() -> None:
    promtool = require_tool("promtool")
    # Also checks the rule files the configuration names.
    out = run_tool([promtool, "check", "config", "prometheus.yml"], cwd=PROMETHEUS_DIR)
    assert "SUCCESS" in out.stdout + out.stderr


def test_check_rules() -> None:
    promtool = require_tool("promtool")
    out = run_tool([promtool, "check", "rules", str(ALERTS)])
    assert re.search(rf"SUCCESS: {len(REQUIRED_ALERTS)} rules found", out.stdout)


def test_alert_unit_tests_pass() -> None:
    promtool = require_tool("promtool")
    out = run_tool([promtool, "test", "rules", ALERTS_TEST.name], cwd=PROMETHEUS_DIR)
    assert "SUCCESS" in out.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert names == REQUIRED_ALERTS
    fired, quiet = set(), set()
    for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert fired == REQUIRED_ALERTS
    assert quiet == REQUIRED_ALERTS


def test_unit_tests_fail_when_a_threshold_breaks(tmp_path) -> None:
    """The unit tests are not vacuous: raising the flag-rate threshold makes them fail."""
    promtool = require_tool("promtool")
    text = ALERTS.read_text()
    assert ") > 0.25" in text
    (tmp_path / "alerts.yml").write_text(text.replace(") > 0.25", ") > 0.9"))
    (tmp_path / "alerts_test.yml").write_text(ALERTS_TEST.read_text())
    result = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "GGAHighFlagRate" in result.stdout + result.stderr
