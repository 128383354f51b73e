#!/usr/bin/env python3
"""Draw the end-to-end bench results as an SVG bar chart (Python stdlib only).

    python3 scripts/bench-chart.py [target/bench-e2e.json] [-o docs/benchmarks.svg]

Reads the JSON `cargo bench --bench e2e` writes and draws three panels:

1. performance relative to a direct connection, per scenario and target,
   "higher is better" throughout: rate and throughput as target / direct,
   times as direct / target (the median of per-round ratios, so a bar of 0.5
   means half the connection rate, or twice the round-trip time);
2. router RSS per idle connection (KiB, lower is better);
3. connection-rate cost of the large route table (%, lower is better);
4. the proxy's own CPU time per connection (1 and 64 clients) and per GiB
   forwarded (16 connections each way), from its threads' schedstat: a
   figure other work on the machine barely moves (lower is better).
"""

import argparse
import json
import sys
from html import escape

COLORS = {
    "sni-router": "#e8590c",
    "sni-router-quiet": "#ffa94d",
    "sni-router-busy": "#c92a2a",
    "sni-router-b": "#adb5bd",
    "haproxy": "#1c7ed6",
    "haproxy-busy": "#74c0fc",
    "nginx": "#2f9e44",
    "sniproxy": "#7048e8",
    "floor": "#495057",
}
FALLBACK = ["#868e96", "#f59f00", "#d6336c", "#0ca678"]

# (scenario, metric, label under the group)
HEADLINE = [
    ("connrate_c1", "conns_per_s", "conn/s\n1 client"),
    ("connrate_c64", "conns_per_s", "conn/s\n64 clients"),
    ("connrate_c1", "p50", "conn time p50\n1 client"),
    ("throughput_up_1", "MB_per_s", "throughput up\n1 conn"),
    ("throughput_down_1", "MB_per_s", "throughput down\n1 conn"),
    ("throughput_up_16", "MB_per_s", "throughput up\n16 conns"),
    ("throughput_down_16", "MB_per_s", "throughput down\n16 conns"),
    ("latency_split", "p99", "RTT p99\nproxy own CPU"),
    ("latency_1cpu", "p99", "RTT p99\nall on 1 CPU"),
]

FONT = "font-family='DejaVu Sans, Helvetica, Arial, sans-serif'"


def color(target, order):
    if target in COLORS:
        return COLORS[target]
    return FALLBACK[order.index(target) % len(FALLBACK)]


def find(rows, scenario, metric):
    for row in rows:
        if row["scenario"] == scenario and row["metric"] == metric:
            return row
    return None


def relative(row, target):
    """Higher-is-better ratio to direct, or None."""
    cell = row["targets"].get(target)
    if not cell or cell.get("ratio_to_direct") is None:
        return None
    r = cell["ratio_to_direct"]
    if row["better"] == "lower":
        return 1.0 / r if r else None
    return r


def text(x, y, s, size=12, anchor="middle", weight="normal", fill="#212529"):
    lines = str(s).split("\n")
    out = []
    for i, line in enumerate(lines):
        out.append(
            f"<text x='{x:.1f}' y='{y + i * (size + 2):.1f}' font-size='{size}' "
            f"text-anchor='{anchor}' font-weight='{weight}' fill='{fill}' {FONT}>{escape(line)}</text>"
        )
    return "\n".join(out)


def bar_panel(svg, x0, y0, width, height, title, groups, targets, order, ymax, fmt, ref=None):
    """Grouped vertical bars. groups: [(label, {target: value})]."""
    svg.append(text(x0, y0 - 14, title, size=15, anchor="start", weight="bold"))
    plot_h = height - 60
    base = y0 + plot_h
    # Axis and grid.
    for k in range(0, 5):
        v = ymax * k / 4
        y = base - plot_h * v / ymax
        svg.append(f"<line x1='{x0}' y1='{y:.1f}' x2='{x0 + width}' y2='{y:.1f}' stroke='#e9ecef'/>")
        svg.append(text(x0 - 6, y + 4, fmt(v), size=10, anchor="end", fill="#868e96"))
    if ref is not None and ref <= ymax:
        y = base - plot_h * ref / ymax
        svg.append(
            f"<line x1='{x0}' y1='{y:.1f}' x2='{x0 + width}' y2='{y:.1f}' "
            f"stroke='#212529' stroke-dasharray='5,4'/>"
        )
        svg.append(text(x0 + width + 4, y + 4, "direct", size=10, anchor="start"))
    svg.append(f"<line x1='{x0}' y1='{base}' x2='{x0 + width}' y2='{base}' stroke='#495057'/>")
    if not groups:
        svg.append(text(x0 + width / 2, y0 + plot_h / 2, "no data", size=12))
        return
    gw = width / len(groups)
    bw = min(28.0, (gw - 12) / max(1, len(targets)))
    for gi, (label, values) in enumerate(groups):
        gx = x0 + gi * gw + (gw - bw * len(targets)) / 2
        for ti, t in enumerate(targets):
            v = values.get(t)
            if v is None:
                continue
            h = plot_h * min(v, ymax) / ymax
            bx = gx + ti * bw
            svg.append(
                f"<rect x='{bx:.1f}' y='{base - h:.1f}' width='{bw - 2:.1f}' height='{h:.1f}' "
                f"fill='{color(t, order)}'><title>{escape(t)}: {fmt(v)}</title></rect>"
            )
            svg.append(text(bx + (bw - 2) / 2, base - h - 3, fmt(v), size=9))
        svg.append(text(x0 + gi * gw + gw / 2, base + 16, label, size=11))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", nargs="?", default="target/bench-e2e.json")
    ap.add_argument("-o", "--output", default="docs/benchmarks.svg")
    args = ap.parse_args()
    with open(args.json, encoding="utf-8") as f:
        doc = json.load(f)
    rows = doc["rows"]
    meta = doc.get("meta", {})

    seen = []
    for row in rows:
        for t in row["targets"]:
            if t != "direct" and "@" not in t and t not in seen:
                seen.append(t)
    order = [t for t in COLORS if t in seen] + [t for t in seen if t not in COLORS]

    groups = []
    for scenario, metric, label in HEADLINE:
        row = find(rows, scenario, metric)
        if row is None:
            continue
        values = {t: relative(row, t) for t in order}
        if any(v is not None for v in values.values()):
            groups.append((label, values))
    top = max([v for _, vals in groups for v in vals.values() if v is not None] + [1.0])
    ymax = max(1.2, round(top * 1.15 + 0.05, 1))

    idle = find(rows, "idle", "rss_per_conn")
    idle_groups = []
    if idle:
        idle_groups = [("KiB per idle connection", {t: idle["targets"].get(t, {}).get("median") for t in order})]
    idle_max = max([v for _, vals in idle_groups for v in vals.values() if v is not None] + [1.0]) * 1.2

    cost = find(rows, "route_scale", "cost")
    cost_groups = []
    if cost:
        cost_groups = [
            (f"conn/s lost with {meta.get('routes', '?')} routes",
             {t: max(0.0, cost["targets"].get(t, {}).get("median") or 0.0) if t in cost["targets"] else None
              for t in order})
        ]
    cost_max = max([v for _, vals in cost_groups for v in vals.values() if v is not None] + [5.0]) * 1.2

    def cpu_groups(items):
        out = []
        for scenario, metric, label in items:
            row = find(rows, scenario, metric)
            if row:
                out.append((label, {t: row["targets"].get(t, {}).get("median") for t in order}))
        return out

    conn_cpu = cpu_groups([
        ("connrate_c1", "cpu_per_conn", "1 client"),
        ("connrate_c64", "cpu_per_conn", "64 clients"),
    ])
    gib_cpu = cpu_groups([
        ("throughput_up_16", "cpu_per_gib", "up, 16 conns"),
        ("throughput_down_16", "cpu_per_gib", "down, 16 conns"),
    ])

    def top_of(groups, floor):
        return max([v for _, vals in groups for v in vals.values() if v is not None] + [floor]) * 1.2

    width, left = 1200, 70
    main_w = width - left - 80
    svg = []
    h1, h2 = 380, 260
    total_h = 90 + h1 + 60 + h2 + 60 + h2 + 40
    svg.append(
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{total_h}' "
        f"viewBox='0 0 {width} {total_h}'>"
    )
    svg.append(f"<rect width='{width}' height='{total_h}' fill='white'/>")
    sub = (
        f"{meta.get('nproc', '?')} CPUs, {meta.get('cpu_model', '')}, kernel {meta.get('kernel', '')}, "
        f"commit {meta.get('commit', '?')}; load generator on CPU {meta.get('load_cpu', 0)}, "
        f"proxy on CPU {meta.get('proxy_cpu', 1)} with one worker; medians of {meta.get('rounds', '?')} rounds"
    )
    svg.append(text(left, 28, "sni-router end-to-end benchmark over loopback", size=18, anchor="start", weight="bold"))
    svg.append(text(left, 48, sub, size=11, anchor="start", fill="#495057"))
    # Legend.
    lx = left
    for t in order:
        svg.append(f"<rect x='{lx}' y='60' width='12' height='12' fill='{color(t, order)}'/>")
        svg.append(text(lx + 16, 70, t, size=12, anchor="start"))
        lx += 30 + 8 * len(t)

    bar_panel(
        svg, left, 110, main_w, h1,
        "Relative to a direct connection (higher is better; times as direct ÷ target)",
        groups, order, order, ymax, lambda v: f"{v:.2f}", ref=1.0,
    )
    half = (main_w - 80) / 2
    y2 = 110 + h1 + 50
    bar_panel(svg, left, y2, half, h2, "Idle memory: RSS per connection (KiB, lower is better)",
              idle_groups, order, order, idle_max, lambda v: f"{v:.1f}")
    bar_panel(svg, left + half + 80, y2, half, h2, "Route scale: connection-rate cost (%, lower is better)",
              cost_groups, order, order, cost_max, lambda v: f"{v:.1f}")
    y3 = y2 + h2 + 60
    bar_panel(svg, left, y3, half, h2, "Proxy CPU per connection (µs, lower is better)",
              conn_cpu, order, order, top_of(conn_cpu, 1.0), lambda v: f"{v:.0f}")
    bar_panel(svg, left + half + 80, y3, half, h2, "Proxy CPU per GiB forwarded (s, lower is better)",
              gib_cpu, order, order, top_of(gib_cpu, 0.1), lambda v: f"{v:.2f}")
    svg.append("</svg>")

    with open(args.output, "w", encoding="utf-8") as f:
        f.write("\n".join(svg) + "\n")
    print(f"bench-chart: wrote {args.output} ({len(groups)} scenarios, targets: {', '.join(order)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
