"""The merchant portal's money pages, included at /merchant/balance/ (namespace "merchant_ledger")."""

from django.urls import path

from ledger.portal import views

app_name = "merchant_ledger"

urlpatterns = [
    path("", views.balance, name="balance"),
    path("payouts/", views.payout_list, name="payouts"),
    path("statement/", views.statement, name="statement"),
    path("statement.csv", views.statement_csv, name="statement_csv"),
]
