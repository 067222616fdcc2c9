from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from backoffice import probes
from backoffice.charts import chart_view
from backoffice.live import live_status_view

urlpatterns = [
    # Browsers ask for /favicon.ico whatever the page says.
    path("favicon.ico", RedirectView.as_view(url=static("backoffice/favicon.svg"), permanent=True)),
    path("healthz", probes.healthz, name="healthz"),
    path("readyz", probes.readyz, name="readyz"),
    path("metrics", probes.metrics, name="metrics"),
    path("admin/dashboard/charts/<slug:name>.svg", admin.site.admin_view(chart_view), name="dashboard_chart"),
    path("admin/live-status/", admin.site.admin_view(live_status_view), name="live_status"),
    path("admin/", admin.site.urls),
    path("merchant/", include("payments.portal.urls")),
    path("merchant/webhooks/", include("notifications.portal.urls")),
    path("merchant/balance/", include("ledger.portal.urls")),
    # Answers only when DEBUG is on: a webhook receiver to try webhooks on a laptop.
    path("dev/webhooks/", include("notifications.dev_receiver")),
]
