from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("merchant/", include("payments.portal.urls")),
    path("merchant/webhooks/", include("notifications.portal.urls")),
    path("merchant/balance/", include("ledger.portal.urls")),
]
