"""What the alert rules and the dashboard ask Prometheus for: metric names and label matchers.

A small extractor, not a parser: enough for the expressions in deploy/, which it is tested on
(tests/unit/test_metrics.py). Names are the identifiers left once strings, durations,
numbers, grouping clauses, functions, aggregations and keywords are taken out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "veil.json"

_KEYWORDS = frozenset(
    {
        # aggregation operators (followed by `by (...)` or `(`)
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
        # binary operators and modifiers
        "and",
        "or",
        "unless",
        "atan2",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
    }
)
# A selector's braces may hold quoted `{` and `}` (route templates): strings are read whole.
_SELECTOR = re.compile(r'([A-Za-z_:][\w:]*)?\{((?:[^}"]|"(?:[^"\\]|\\.)*")*)\}')
_MATCHER = re.compile(r'\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(\s*\()?")
_NUMBER = re.compile(r"(?<![\w:])\d+(?:\.\d+)?(?:e[+-]?\d+)?(?:ms|s|m|h|d|w|y)?\b", re.IGNORECASE)


@dataclass(frozen=True)
class Matcher:
    metric: str
    label: str
    operator: str
    value: str


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects, bare or with `{...}`, inside any function."""
    text = _SELECTOR.sub(lambda m: (m[1] or "") + " ", expr)  # label matchers go, names stay
    text = re.sub(r'"(?:[^"\\]|\\.)*"', " ", text)  # string arguments (label_replace, ...)
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = _GROUPING.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names = set()
    for name, call in _IDENTIFIER.findall(text):
        if not call and name.lower() not in _KEYWORDS:
            names.add(name)
    return names


def matchers(expr: str) -> list[Matcher]:
    """Every `label op "value"` of every selector that names its metric."""
    found = []
    for metric, body in _SELECTOR.findall(expr):
        if metric:
            for label, operator, value in _MATCHER.findall(body):
                found.append(Matcher(metric, label, operator, value))
    return found


def alert_rules() -> list[dict[str, object]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[str]:
    """The query of every panel target, rows included."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = list(dashboard["panels"])
    expressions = []
    while panels:
        panel = panels.pop()
        panels.extend(panel.get("panels", []))
        expressions.extend(target["expr"] for target in panel.get("targets", []))
    return expressions


def all_expressions() -> list[str]:
    return [str(rule["expr"]) for rule in alert_rules()] + dashboard_expressions()
