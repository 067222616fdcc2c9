"""The merchant portal, included at /merchant/ (namespace "merchant")."""

from django.contrib.auth import views as auth_views
from django.urls import path, register_converter

from payments.portal import views
from payments.portal.converters import PublicPaymentId

register_converter(PublicPaymentId, "public_id")

app_name = "merchant"

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("login/", views.MerchantLoginView.as_view(), name="login"),
    path("logout/", views.MerchantLogoutView.as_view(), name="logout"),
    path("password-reset/", views.MerchantPasswordResetView.as_view(), name="password_reset"),
    path(
        "password-reset/sent/",
        auth_views.PasswordResetDoneView.as_view(template_name="merchant/password_reset_done.html"),
        name="password_reset_done",
    ),
    path("reset/<uidb64>/<token>/", views.MerchantPasswordResetConfirmView.as_view(), name="password_reset_confirm"),
    path(
        "reset/done/",
        auth_views.PasswordResetCompleteView.as_view(template_name="merchant/password_reset_complete.html"),
        name="password_reset_complete",
    ),
    path("switch/", views.switch_merchant, name="switch"),
    path("payments/", views.payment_list, name="payments"),
    path("<slug:kind>/export.<slug:fmt>", views.list_export, name="export"),
    path("exports/", views.export_list, name="exports"),
    path("exports/<str:public_id>/download/", views.export_download, name="export_download"),
    path("payments/status/", views.payment_statuses, name="payment_statuses"),
    path("payments/new/", views.payment_new, name="payment_new"),
    path("payments/<public_id:public_id>/", views.payment_detail, name="payment"),
    path("payments/<public_id:public_id>/refund/", views.refund_new, name="refund_new"),
]
