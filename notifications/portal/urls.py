"""The merchant portal's webhook settings, included at /merchant/webhooks/ (namespace
"merchant_webhooks")."""

from django.urls import path

from notifications.portal import views

app_name = "merchant_webhooks"

urlpatterns = [
    path("", views.endpoint_list, name="list"),
    path("new/", views.endpoint_new, name="new"),
    path("<int:endpoint_id>/", views.endpoint_detail, name="detail"),
    path("<int:endpoint_id>/edit/", views.endpoint_edit, name="edit"),
    path("<int:endpoint_id>/secret/", views.endpoint_reveal_secret, name="reveal_secret"),
    *(
        path(f"<int:endpoint_id>/{action}/", views.endpoint_action, {"action": action}, name=action)
        for action in views.ENDPOINT_ACTIONS
    ),
]
