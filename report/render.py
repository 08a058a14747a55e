"""The report's numbers (report/aggregate.py ``data()``) → one self-contained HTML page. No Beam import.

    html = render_html(data, title="chatbeam run 2026-01-31")

Charts are Bokeh figures with BokehJS's core bundle inlined (about 1.3 MB): the page needs no
network, and a reader can zoom into a 429 storm and hover for values. Every chart sits in an element with a
``data-chart`` attribute (the browser test checks each one rendered); a chart with nothing to draw is replaced by
a sentence saying why. Tables are plain HTML; every string from a record is escaped.
"""

from __future__ import annotations

import datetime
import html
import json
from typing import Any, Mapping, Sequence

from bokeh.embed import components
from bokeh.models import ColumnDataSource, HoverTool, LinearAxis, Range1d
from bokeh.plotting import figure
from bokeh.resources import Resources

__all__ = ["render_html"]

COLORS = {"results": "#1b9e77", "errors": "#d95f02", "in_flight": "#386cb0", "limit": "#7f7f7f",
          "progress": "#9467bd", "http_429": "#e7298a", "retries": "#e6ab02", "p50": "#1b9e77", "p95": "#d95f02",
          "p99": "#7570b3", "bar": "#386cb0"}
HEIGHT = 260
# BokehJS core only (about 1.3 MB): the page uses no widgets, tables, WebGL or math, whose bundles would triple it.
BOKEH_JS = Resources(mode="inline", components=["bokeh"])
TOOLS = "xpan,xwheel_zoom,box_zoom,reset,save"

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1180px;
       padding: 0 16px; color: #222; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin: 28px 0 6px; }
.sub { color: #666; margin-top: 0; } .note { color: #666; font-size: 13px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin: 14px 0; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px 12px; min-width: 120px; }
.card b { display: block; font-size: 19px; } .card span { color: #666; font-size: 12px; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th, td { border-bottom: 1px solid #e5e5e5; padding: 4px 10px 4px 0; text-align: left; vertical-align: top; }
td.n, th.n { text-align: right; } code { font-size: 12px; word-break: break-all; }
.chart { margin: 4px 0 10px; } .grid { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
@media (max-width: 900px) { .grid { grid-template-columns: 1fr; } }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _num(value: Any, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}" if isinstance(value, (int, float)) else _e(value)


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "–"
    return datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _figure(title: str, y_label: str, **kw: Any):
    fig = figure(title=title, height=HEIGHT, sizing_mode="stretch_width", tools=TOOLS, toolbar_location="above",
                 **kw)
    fig.yaxis.axis_label = y_label
    fig.title.text_font_size = "12px"
    fig.title.text_font_style = "normal"
    fig.toolbar.logo = None
    return fig


def _time_x(timeline: Mapping[str, Any]) -> list[float]:
    """Bokeh's datetime axis wants milliseconds since the epoch; each value is its bin's middle."""
    t0, w = timeline["t0"], timeline["bin_s"]
    return [(t0 + (i + 0.5) * w) * 1000 for i in range(timeline["n"])]


def _legend(fig) -> None:
    """Below the plot, in a row: it never hides a line. A click on an entry hides that line."""
    legend = fig.legend[0]
    legend.orientation = "horizontal"
    legend.click_policy = "hide"
    legend.label_text_font_size = "11px"
    legend.border_line_alpha = 0
    legend.padding = legend.margin = 2
    fig.add_layout(legend, "below")


def _completions_chart(t: Mapping[str, Any]):
    w = t["bin_s"]
    source = ColumnDataSource({"x": _time_x(t), "results": [v / w for v in t["results"]],
                               "errors": [v / w for v in t["errors"]]})
    fig = _figure(f"outputs finished per second, {w} s bins", "records / s", x_axis_type="datetime")
    fig.line("x", "results", source=source, color=COLORS["results"], line_width=2, legend_label="results")
    fig.line("x", "errors", source=source, color=COLORS["errors"], line_width=2, legend_label="errors")
    fig.add_tools(HoverTool(tooltips=[("time", "@x{%H:%M:%S}"), ("results/s", "@results{0.0}"),
                                      ("errors/s", "@errors{0.0}")], formatters={"@x": "datetime"}, mode="vline"))
    _legend(fig)
    return fig


def _concurrency_chart(t: Mapping[str, Any]):
    columns = {"x": _time_x(t), "progress": t["records_in_progress"]}
    engine = t.get("in_flight") is not None
    if engine:
        columns.update(in_flight=t["in_flight"], limit=t["limit"])
    source = ColumnDataSource(columns)
    fig = _figure(f"summed over {t.get('processes') or 0} worker process(es), {t['bin_s']} s bins" if engine
                  else f"{t['bin_s']} s bins", "requests", x_axis_type="datetime")
    tips = [("time", "@x{%H:%M:%S}"), ("records in progress", "@progress{0}")]
    progress_axis = {}
    if engine:
        flight = fig.step("x", "in_flight", source=source, color=COLORS["in_flight"], line_width=2, mode="center",
                          legend_label="HTTP requests in flight (peak per bin)")
        limit = fig.step("x", "limit", source=source, color=COLORS["limit"], line_width=2, line_dash="dashed",
                         mode="center", legend_label="adaptive limit")
        tips += [("in flight", "@in_flight{0}"), ("limit", "@limit{0}")]
        # Records in progress (waiting for a permit included) can be many times the requests in flight: they get
        # their own axis on the right, so the limit stays readable.
        fig.y_range.renderers = [flight, limit]
        fig.y_range.start = 0
        fig.extra_y_ranges = {"records": Range1d(0, max(1, max(t["records_in_progress"])) * 1.1)}
        fig.add_layout(LinearAxis(y_range_name="records", axis_label="records in progress"), "right")
        progress_axis = {"y_range_name": "records"}
    fig.line("x", "progress", source=source, color=COLORS["progress"], line_width=1.5, line_alpha=0.8,
             legend_label="records in progress" + (" (right axis)" if engine else ""),
             **progress_axis)
    fig.add_tools(HoverTool(tooltips=tips, formatters={"@x": "datetime"}, mode="vline"))
    _legend(fig)
    return fig


def _throttle_chart(t: Mapping[str, Any]):
    engine = t.get("http_429") is not None
    retries = t["retries_engine"] if engine else t["retries"]
    columns = {"x": _time_x(t), "retries": retries, "rate_limited": t["rate_limited_errors"]}
    if engine:
        columns["http_429"] = t["http_429"]
    source = ColumnDataSource(columns)
    fig = _figure(f"count per {t['bin_s']} s bin", "per bin", x_axis_type="datetime")
    width_ms = t["bin_s"] * 1000 * 0.9
    tips = [("time", "@x{%H:%M:%S}"), ("retries", "@retries{0}"), ("rate_limited errors", "@rate_limited{0}")]
    if engine:
        fig.vbar(x="x", top="http_429", width=width_ms, source=source, color=COLORS["http_429"], alpha=0.7,
                 legend_label="answered 429")
        tips.insert(1, ("answered 429", "@http_429{0}"))
    fig.line("x", "retries", source=source, color=COLORS["retries"], line_width=2,
             legend_label="retries" + ("" if engine else " (by the record's finish time)"))
    if any(t["rate_limited_errors"]):
        fig.line("x", "rate_limited", source=source, color=COLORS["errors"], line_width=2, line_dash="dotted",
                 legend_label="rate_limited errors")
    fig.y_range.start = 0
    fig.add_tools(HoverTool(tooltips=tips, formatters={"@x": "datetime"}, mode="vline"))
    _legend(fig)
    return fig


def _latency_chart(lat: Mapping[str, Any]):
    edges, counts = lat["edges"], lat["counts"]
    source = ColumnDataSource({"left": edges[:-1], "right": edges[1:], "count": counts})
    kw = {"x_axis_type": "log"} if lat.get("log_bins") else {}
    fig = _figure(f"{lat['count']:,} results" + (", log scale" if lat.get("log_bins") else ""), "results", **kw)
    fig.xaxis.axis_label = "latency (ms, retries and waits included)"
    fig.quad(left="left", right="right", top="count", bottom=0, source=source, color=COLORS["bar"], alpha=0.75,
             line_color="white")
    top = max(counts) if counts else 1
    for name in ("p50", "p95", "p99"):
        fig.segment(x0=[lat[name]], x1=[lat[name]], y0=[0], y1=[top * 1.05], color=COLORS[name], line_width=2,
                    line_dash="dashed", legend_label=f"{name} {lat[name]:,.0f} ms")
    fig.y_range = Range1d(0, top * 1.12)
    fig.add_tools(HoverTool(tooltips=[("from ms", "@left{0.0}"), ("to ms", "@right{0.0}"), ("results", "@count")]))
    _legend(fig)
    return fig


def _cost_chart(rows: Sequence[Mapping[str, Any]]):
    labels = [r["model"] + (f" · {r['tier']}" if r.get("tier") else "") for r in rows]
    source = ColumnDataSource({"label": labels, "cost": [r["cost_usd"] for r in rows],
                               "tokens": [r["total_tokens"] for r in rows], "records": [r["records"] for r in rows]})
    fig = figure(title="estimated cost by model" + (" and tier" if any(r.get("tier") for r in rows) else ""),
                 y_range=list(reversed(labels)), height=max(140, 60 + 34 * len(labels)),
                 sizing_mode="stretch_width", tools="save", toolbar_location="above")
    fig.title.text_font_size = "12px"
    fig.title.text_font_style = "normal"
    fig.toolbar.logo = None
    fig.hbar(y="label", right="cost", height=0.6, source=source, color=COLORS["bar"])
    fig.xaxis.axis_label = "USD (estimated from the price table)"
    fig.x_range.start = 0
    fig.add_tools(HoverTool(tooltips=[("model", "@label"), ("cost", "$@cost{0.0000}"), ("tokens", "@tokens{0,0}"),
                                      ("records", "@records{0,0}")]))
    return fig


def _charts(data: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    """(key, heading, figure or a sentence) for each chart of the page."""
    t, lat, models = data.get("timeline"), data.get("latency"), data.get("by_model") or []
    none = "No output of this run carries started_at / finished_at (read errors only, or written before they existed)."
    return [
        ("completions", "Completions over time", _completions_chart(t) if t else none),
        ("concurrency", "Requests in flight and the adaptive limit", _concurrency_chart(t) if t else none),
        ("throttling", "429s and retries over time", _throttle_chart(t) if t else none),
        ("latency", "Latency", _latency_chart(lat) if lat else "No results, so no latencies."),
        ("cost", "Tokens and cost by model", _cost_chart(models) if models else "No tokens were used."),
    ]


def _cards(data: Mapping[str, Any]) -> str:
    totals, lat, summary = data["totals"], data.get("latency") or {}, data.get("summary") or {}
    span = totals.get("span_s")
    rate = totals["outputs"] / span if span else None
    attempts = summary.get("http_requests")
    share_429 = (f"{100 * summary.get('status_429', 0) / attempts:.1f} %" if attempts else None)
    cards = [("records", _num(totals["outputs"])), ("results", _num(totals["results"])),
             ("errors", _num(totals["errors"])), ("span", _duration(span)),
             ("records / s", _num(rate, 1) if rate else "–"),
             ("est. cost", f"${totals['cost_usd']:,.4f}"),
             ("p50 / p95 / p99", " / ".join(_num(lat.get(k)) for k in ("p50", "p95", "p99")) + " ms" if lat else "–")]
    if share_429:
        cards.append(("answered 429", share_429))
    if totals.get("cached_results"):
        cards.append(("from the cache", _num(totals["cached_results"])))
    return '<div class="cards">' + "".join(f"<div class=card><b>{v}</b><span>{_e(k)}</span></div>"
                                           for k, v in cards) + "</div>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f'<th class="{"n" if i in numeric else ""}">{_e(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{"n" if i in numeric else ""}">{cell}</td>'
                                    for i, cell in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _models_table(rows: Sequence[Mapping[str, Any]]) -> str:
    tiers = any(r.get("tier") for r in rows)
    headers = ["model"] + (["tier"] if tiers else []) + ["records", "prompt", "completion", "reasoning", "cached",
                                                         "total tokens", "est. USD"]
    body = [[_e(r["model"])] + ([_e(r.get("tier") or "–")] if tiers else [])
            + [_num(r[k]) for k in ("records", "prompt_tokens", "completion_tokens", "reasoning_tokens",
                                    "cached_tokens", "total_tokens")] + [f"{r['cost_usd']:,.4f}"] for r in rows]
    first = 2 if tiers else 1
    return _table(headers, body, numeric=range(first, first + 7))


def _errors_section(errors: Sequence[Mapping[str, Any]]) -> str:
    if not errors:
        return "<p>No errors.</p>"
    rows = []
    for e in errors:
        examples = "".join(f"<div><code>{_e(x['id'])}</code>"
                           + (f" · HTTP {_e(x['status_code'])}" if x.get("status_code") else "")
                           + (f" · {_e(x['attempts'])} attempts" if x.get("attempts") else "")
                           + f"<br>{_e(x['message'])}</div>" for x in e["examples"])
        rows.append([f"<b>{_e(e['error_type'])}</b>", _e(e.get("stage")), _num(e["count"]),
                     "yes" if e.get("retryable") else "no", examples])
    return _table(["error_type", "stage", "count", "retryable", "examples (messages redacted)"], rows, numeric=[2])


def _slowest_section(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "<p>No timed records.</p>"
    body = [[f"<code>{_e(r['id'])}</code>", _e(r["outcome"]), _num(r["latency_ms"]), _num(r.get("attempts")),
             _e(r.get("started_at")), _num(r.get("total_tokens")), _e(r.get("model") or "")] for r in rows]
    return _table(["id", "outcome", "latency ms", "attempts", "started_at", "tokens", "model"], body,
                  numeric=[2, 3, 5])


def _options_section(data: Mapping[str, Any]) -> str:
    run, options = data.get("run") or {}, data.get("options") or {}
    if not options and not run:
        return "<p class=note>The run's options were not found (no run-*.json in the telemetry folder).</p>"
    items = [[_e(k), f"<code>{_e(json.dumps(v) if not isinstance(v, str) else v)}</code>"] for k, v in run.items()]
    items += [[f"--{_e(k)}", f"<code>{_e(json.dumps(v) if not isinstance(v, str) else v)}</code>"]
              for k, v in options.items()]
    return _table(["", "value (secrets redacted)"], items)


def _summary_section(summary: Mapping[str, Any] | None) -> str:
    if not summary:
        return ""
    keys = ("records_read", "records_called", "http_requests", "retries", "status_429", "throttled_seconds",
            "resumed", "replay_skipped", "wall_seconds", "records_per_second", "estimated_cost_usd")
    rows = [[_e(k), _num(summary.get(k), 2 if isinstance(summary.get(k), float) else 0)]
            for k in keys if summary.get(k) is not None]
    return "<h2>Run summary (Beam counters)</h2>" + _table(["", ""], rows, numeric=[1])


def render_html(data: Mapping[str, Any], *, title: str = "chatbeam run report", sources: Sequence[str] = ()) -> str:
    """The whole page. ``sources``: the prefixes the outputs were read from (shown under the title)."""
    charts = _charts(data)
    figures = [c for _, _, c in charts if not isinstance(c, str)]
    script, divs = components(figures) if figures else ("", ())
    divs = iter(divs)
    chart_html = {}
    for key, heading, chart in charts:
        body = (f'<p class=note data-chart-missing="{key}">{_e(chart)}</p>' if isinstance(chart, str)
                else f'<div class=chart data-chart="{key}">{next(divs)}</div>')
        chart_html[key] = f"<h2>{_e(heading)}</h2>{body}"
    totals, t = data["totals"], data.get("timeline") or {}
    engine_note = ("" if t.get("in_flight") is not None or not t else
                   "<p class=note>No engine samples were found (the run's telemetry folder is missing), so HTTP "
                   "requests in flight, the limit and 429s are not drawn; records in progress and retries come "
                   "from the records.</p>")
    sub = (f"{_when(totals.get('first_at'))} → {_when(totals.get('last_at'))} · prices as of "
           f"{_e(totals.get('prices_as_of'))}" + (f" · {' · '.join(_e(s) for s in sources)}" if sources else ""))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{CSS}</style>
{BOKEH_JS.render_js()}
</head><body>
<h1>{_e(title)}</h1><p class=sub>{sub}</p>
{_cards(data)}
{chart_html["completions"]}
<div class=grid><div>{chart_html["concurrency"]}{engine_note}</div><div>{chart_html["throttling"]}</div></div>
<div class=grid><div>{chart_html["latency"]}</div><div>{chart_html["cost"]}</div></div>
{_models_table(data["by_model"]) if data.get("by_model") else ""}
<h2>Errors by type</h2>
{_errors_section(data.get("errors_by_type") or [])}
<h2>Slowest records</h2>
{_slowest_section(data.get("slowest") or [])}
{_summary_section(data.get("summary"))}
<h2>Options</h2>
{_options_section(data)}
<p class=note>Made by chatbeam from the run's outputs{" and engine samples" if t.get("in_flight") is not None else ""}.
Unparsable output lines: {totals.get("unparsable_lines", 0)}.</p>
{script}
</body></html>
"""
