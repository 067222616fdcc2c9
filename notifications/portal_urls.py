"""The merchant portal's webhook settings, included at /merchant/webhooks/ (namespace
"merchant_webhooks")."""

from django.urls import path

from notifications import portal_views

app_name = "merchant_webhooks"

urlpatterns = [
    path("", portal_views.endpoint_list, name="list"),
    path("new/", portal_views.endpoint_new, name="new"),
    path("<int:endpoint_id>/", portal_views.endpoint_detail, name="detail"),
    path("<int:endpoint_id>/edit/", portal_views.endpoint_edit, name="edit"),
    path("<int:endpoint_id>/secret/", portal_views.endpoint_reveal_secret, name="reveal_secret"),
    *(
        path(f"<int:endpoint_id>/{action}/", portal_views.endpoint_action, {"action": action}, name=action)
        for action in portal_views.ENDPOINT_ACTIONS
    ),
]
