"""The run report: a run's outputs (and its engine samples) → one self-contained HTML page. No Beam import.

    data = RunAggregate(prices).data()     # report/aggregate.py: numbers only, bounded in size
    html = render_html(data)               # report/render.py: Bokeh charts with their JS inlined, tables

``pipelines/report.py`` reads the sinks (local or gs://) and writes ``OUTPUT-report.html``.
"""
