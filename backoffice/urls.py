from django.contrib import admin
from django.urls import include, path

from backoffice import probes
from backoffice.charts import chart_view

urlpatterns = [
    path("healthz", probes.healthz, name="healthz"),
    path("readyz", probes.readyz, name="readyz"),
    path("metrics", probes.metrics, name="metrics"),
    path("admin/dashboard/charts/<slug:name>.svg", admin.site.admin_view(chart_view), name="dashboard_chart"),
    path("admin/", admin.site.urls),
    path("merchant/", include("payments.portal.urls")),
    path("merchant/webhooks/", include("notifications.portal.urls")),
    path("merchant/balance/", include("ledger.portal.urls")),
    # Answers only when DEBUG is on: a webhook receiver to try webhooks on a laptop.
    path("dev/webhooks/", include("notifications.dev_receiver")),
]
