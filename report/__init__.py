"""The run report: a run's outputs (and its engine samples) → one self-contained HTML page. No Beam import.

    data = RunAggregate(prices).data()     # report/aggregate.py: numbers only, bounded in size
    html = render_html(data)               # report/render.py: Bokeh charts with their JS inlined, tables

``transforms/report_files.py`` reads the sinks (local or gs://) and writes ``OUTPUT-report.html``;
``chatbeam report`` (pipelines/report.py) is its command line.
"""
