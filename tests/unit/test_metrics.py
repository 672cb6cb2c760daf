"""The metrics object without a server: bounded labels, refused hits counted by budget, build info,
the pool read at scrape time, every family documented, and the PromQL name extractor the e2e test
relies on."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.promql import DASHBOARD, alert_rules, matchers, metric_names
from veil.core.metrics import BuildInfo, Metrics
from veil.core.security.ratelimit import CountedRateLimiter, MemoryRateLimiter, Rate

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "docs" / "operations.md"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"


def sample(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_an_invented_method_is_counted_as_other_and_mints_no_series() -> None:
    metrics = Metrics()
    for index in range(50):
        metrics.observe_request(f"BREW{index}", "<unmatched>", 405, 0.001)
    metrics.observe_request("POST", "/v1/auth/login", 503, 0.2)

    assert (
        sample(metrics, "veil_http_requests_total", method="other", route="<unmatched>", status="405") == 50
    )
    methods = {
        s.labels["method"]
        for family in text_string_to_metric_families(metrics.render().decode())
        for s in family.samples
        if s.name == "veil_http_requests_total"
    }
    assert methods == {"other", "POST"}
    assert sample(metrics, "veil_http_errors_total", method="POST", route="/v1/auth/login") == 1
    assert sample(metrics, "veil_http_errors_total", method="other", route="<unmatched>") is None


async def test_refused_hits_are_counted_by_budget_and_a_refused_peek_is_not() -> None:
    metrics = Metrics()
    limiter = CountedRateLimiter(MemoryRateLimiter(), metrics.rate_limited)
    rate = Rate.per_window(1, 60)

    assert (await limiter.hit("ws-ticket:abc", rate, 0.0)).allowed
    assert not (await limiter.hit("ws-ticket:abc", rate, 1.0)).allowed
    assert not (await limiter.peek("ws-ticket:abc", rate, 1.0)).allowed
    assert not (await limiter.hit("messages:def", Rate.per_window(1, 60), 1.0, cost=2)).allowed

    assert sample(metrics, "veil_rate_limit_rejections_total", limit="ws-ticket") == 1
    assert sample(metrics, "veil_rate_limit_rejections_total", limit="messages") == 1

    # A key that is not purpose:hash never becomes a label of its own.
    for odd in ("0193a4c2-5e1f-7000-8000-000000000000", "Messages:abc", "a1b2:c3", "x" * 40 + ":y"):
        assert (await limiter.hit(odd, rate, 0.0)).allowed
        assert not (await limiter.hit(odd, rate, 1.0)).allowed
    assert sample(metrics, "veil_rate_limit_rejections_total", limit="other") == 4


@pytest.mark.parametrize(
    ("revision", "commit"),
    [("0123abcdef45", "0123abcdef45"), ("", "unknown"), ("a b\nc", "unknown"), ("x" * 65, "unknown")],
)
def test_build_info_names_the_commit_when_it_looks_like_one(
    monkeypatch: pytest.MonkeyPatch, revision: str, commit: str
) -> None:
    monkeypatch.setenv("VEIL_REVISION", revision)
    metrics = Metrics()
    assert metrics.build.commit == commit
    assert sample(metrics, "veil_build_info", version=BuildInfo.of_this_process().version, commit=commit) == 1


def test_the_pool_is_read_when_scraped() -> None:
    metrics = Metrics()
    usage = [3, 1]
    metrics.watch_db_pool(10, lambda: (usage[0], usage[1]))
    assert sample(metrics, "veil_db_pool_connections_in_use") == 1
    usage[:] = [4, 4]
    assert sample(metrics, "veil_db_pool_connections") == 4
    assert sample(metrics, "veil_db_pool_connections_in_use") == 4
    assert sample(metrics, "veil_db_pool_max_connections") == 10


def test_every_family_is_documented_in_operations_md() -> None:
    """Each veil_* family, as Prometheus names it (counters with _total), has a row in the
    Metrics section; and the section names no family that does not exist."""
    text = OPERATIONS.read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"`(veil_\w+)", section))
    exported = set()
    for family in text_string_to_metric_families(Metrics().render().decode()):
        if family.name.startswith("veil_") and not family.name.endswith("_created"):
            exported.add(family.name + ("_total" if family.type == "counter" else ""))
    assert exported - documented == set(), "undocumented"
    assert documented - exported == set(), "documented but not exported"
    assert "process_" in section and "python_info" in section


def test_names_are_found_in_selectors_functions_and_binary_expressions() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(a_seconds_bucket{route="/v1/x/{id}/y",'
        ' method=~"POST|PUT"}[5m]))) > 0.2 and on (instance) b_total offset 5m'
        ' / ignoring (reason) c + 1e-9 unless time() - max(d{task="x"}) > 14 * 86400'
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c", "d"}
    assert [(m.metric, m.label, m.operator, m.value) for m in matchers(expr)] == [
        ("a_seconds_bucket", "route", "=", "/v1/x/{id}/y"),
        ("a_seconds_bucket", "method", "=~", "POST|PUT"),
        ("d", "task", "=", "x"),
    ]
    assert metric_names("up") == {"up"}
    assert metric_names('sum(rate(x_total{reason!~"a|b"}[1h:5m]))') == {"x_total"}


def test_every_alert_has_a_severity_a_summary_and_a_runbook_paragraph() -> None:
    headings = {
        line[5:].strip().lower() for line in OPERATIONS.read_text().splitlines() if line.startswith("#### ")
    }
    rules = alert_rules()
    assert len({rule["alert"] for rule in rules}) == len(rules)
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{str(rule['alert']).lower()}"
        assert str(rule["alert"]).lower() in headings, f"no '#### {rule['alert']}' in docs/operations.md"


def test_every_dashboard_panel_queries_the_provisioned_data_source() -> None:
    provisioned = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    uids = {source["uid"] for source in provisioned}
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] in uids, panel["title"]
        assert all(target["datasource"]["uid"] in uids for target in panel["targets"]), panel["title"]
