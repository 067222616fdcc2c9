"""Dashboard charts: SVG drawn on the server with pygal, served as images from the admin.

Each app registers its charts by name; a chart's `render(request)` returns a pygal chart, or
None when the user may not see it (the URL then answers 404). The SVG carries no script
(pygal's config script is dropped: an <img> never runs it, and a strict CSP forbids it) and
its own policy allows only its embedded style sheet.
"""

import re
from collections.abc import Callable

import pygal
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import cache_control
from pygal.style import Style

_charts: dict[str, Callable[[HttpRequest], pygal.graph.graph.Graph | None]] = {}

SCRIPT = re.compile(rb"<script\b.*?</script>", re.S)
PALETTE = ("#2e7d32", "#c62828", "#1565c0", "#ef6c00", "#6a1b9a", "#00838f", "#795548", "#546e7a")
STYLE = Style(
    background="transparent",
    plot_background="transparent",
    foreground="#333",
    foreground_strong="#222",
    foreground_subtle="#888",
    font_family="system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
    colors=PALETTE,
    title_font_size=15,
    label_font_size=11,
    major_label_font_size=11,
    legend_font_size=12,
)


def register_chart(name: str, render: Callable[[HttpRequest], pygal.graph.graph.Graph | None]) -> None:
    _charts[name] = render


def new_chart(kind: type, *, title: str, **options) -> pygal.graph.graph.Graph:
    """A chart in the dashboard's look: no JavaScript, legend below, responsive width."""
    defaults = {
        "js": [],
        "width": 640,
        "height": 280,
        "legend_at_bottom": True,
        "legend_at_bottom_columns": 2,
        "truncate_label": -1,
        "style": STYLE,
        "margin": 12,
        "show_minor_x_labels": False,
        "truncate_legend": 30,
        "no_data_text": "Nothing yet",
    }
    return kind(title=title, **{**defaults, **options})


def chart_svg(chart: pygal.graph.graph.Graph) -> bytes:
    return SCRIPT.sub(b"", chart.render())


@cache_control(private=True, max_age=30)
def chart_view(request: HttpRequest, name: str) -> HttpResponse:
    render = _charts.get(name)
    chart = render(request) if render else None
    if chart is None:
        raise Http404("No such chart.")
    response = HttpResponse(chart_svg(chart), content_type="image/svg+xml")
    response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    return response
