"""The chart's alerting rules: the metrics they select are registered by the relay or the operator, promtool
accepts them (`check rules`), and promtool's unit tests (alerts_test.yaml) fire every alert and keep it quiet
where it should be."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from support.observability import (
    SCRAPE_SERIES,
    alert_exprs,
    metric_names,
    registered_names,
    rendered_rules,
    write_rules,
)

pytestmark = pytest.mark.usefixtures("helm_bin")

ALERT_TESTS = Path(__file__).with_name("alerts_test.yaml")


def test_alert_expressions_use_registered_metrics(tmp_path: Path) -> None:
    known = registered_names(tmp_path) | SCRAPE_SERIES
    exprs = alert_exprs(rendered_rules())
    assert {alert for alert, _ in exprs} == {"MTANotReady", "MTAQueueMessageOld", "MTADeliveryFailureRate",
                                             "MTAAuthFailureSpike", "MTASpoolNearlyFull",
                                             "MTACertificateExpiresSoon", "MTADestinationSuspended",
                                             "MTAOperatorDown"}
    unknown = {(alert, name) for alert, expr in exprs for name in metric_names(expr) if name not in known}
    assert unknown == set()


def test_promtool_check_rules(promtool: Path, tmp_path: Path) -> None:
    rules = write_rules(rendered_rules(), tmp_path / "rules.yaml")
    out = subprocess.run([str(promtool), "check", "rules", str(rules)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 8 rules found" in out.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    cases = [c for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"] for c in test["alert_rule_test"]]
    alerts = {alert for alert, _ in alert_exprs(rendered_rules())}
    assert {c["alertname"] for c in cases if c["exp_alerts"]} == alerts
    assert {c["alertname"] for c in cases if not c["exp_alerts"]} == alerts


def test_promtool_unit_tests_of_the_alerts(promtool: Path, tmp_path: Path) -> None:
    write_rules(rendered_rules(), tmp_path / "rules.yaml")
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    out = subprocess.run([str(promtool), "test", "rules", ALERT_TESTS.name], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
