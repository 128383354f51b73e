"""Every PromQL expression of a Grafana dashboard, parsed, for tests/packaging.rs.

    promql_metrics.py DASHBOARD.json

Finds each panel target's `expr` (rows' nested panels included) and each
query variable's `label_values(SELECTOR, LABEL)`, replaces Grafana's interval
variables (`$__rate_interval`, ...) with a duration so the text is PromQL,
parses it with promql-parser, and prints one JSON object:

    {"parser": "promql-parser 0.11.0",
     "queries": [{"where": "panel 7 \"Bytes /s\" A", "expr": "...",
                  "selectors": [{"metric": "sni_router_bytes_total", "labels": ["job", ...]}],
                  "grouping": ["route", "direction"], "error": null}, ...]}

`labels` are the label names a selector matches on; `grouping` the labels
of `by (...)`, `on (...)`, `group_left (...)` and the LABEL of label_values.
A query that does not parse has its parser error in `error`.
"""

import json
import re
import sys
from importlib.metadata import version

import promql_parser as pp

# Grafana's built-in interval variables; any duration makes the text PromQL.
INTERVALS = {
    "$__rate_interval": "5m",
    "${__rate_interval}": "5m",
    "$__interval": "1m",
    "${__interval}": "1m",
    "$__range": "1h",
    "${__range}": "1h",
}


def queries(dashboard):
    """(where, expr, extra grouping labels) for every query in the dashboard."""
    out = []

    def panels(items):
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if "expr" in target:
                where = 'panel %s "%s" %s' % (panel.get("id"), panel.get("title"), target.get("refId"))
                out.append((where, target["expr"], []))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        where = "variable $%s" % var.get("name")
        m = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", text or "")
        if m:
            out.append((where, m.group(1), [m.group(2)]))
        else:
            out.append((where, text or "", []))
    return out


def analyse(expr):
    selectors = []
    grouping = []

    def visit(node):
        if isinstance(node, pp.VectorSelector):
            labels = [m.name for m in node.matchers.matchers if m.name != "__name__"]
            for group in node.matchers.or_matchers or []:
                labels.extend(m.name for m in group if m.name != "__name__")
            selectors.append({"metric": node.name, "labels": sorted(set(labels))})
        elif isinstance(node, pp.AggregateExpr) and node.modifier is not None:
            grouping.extend(node.modifier.labels)
        elif isinstance(node, pp.BinaryExpr) and node.modifier is not None:
            matching = node.modifier.matching
            if matching is not None:
                grouping.extend(matching.labels)
            grouping.extend(getattr(node.modifier, "group_labels", None) or [])
        return True

    pp.walk(pp.parse(expr), visit)
    return selectors, grouping


def main(path):
    with open(path) as f:
        dashboard = json.load(f)
    result = []
    for where, text, extra in queries(dashboard):
        expr = text
        for var, value in INTERVALS.items():
            expr = expr.replace(var, value)
        entry = {"where": where, "expr": text, "selectors": [], "grouping": list(extra), "error": None}
        try:
            selectors, grouping = analyse(expr)
            entry["selectors"] = selectors
            entry["grouping"] = sorted(set(entry["grouping"] + grouping))
        except Exception as e:  # the parser's own error type varies by version
            entry["error"] = str(e)
        result.append(entry)
    print(json.dumps({"parser": "promql-parser %s" % version("promql-parser"), "queries": result}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1])
