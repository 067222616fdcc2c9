"""Who may see what in the merchant portal. Every view goes through `merchant_view`, which
sets `request.membership` and `request.merchant` from the user's memberships of active
merchants; every query of a view starts from `request.merchant`."""

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.db.models import QuerySet
from django.http import Http404
from django.shortcuts import render
from django.urls import reverse
from django.utils.cache import patch_cache_control

from payments.models import Membership, Payment

SESSION_MERCHANT_KEY = "merchant_portal_merchant_id"


def portal_memberships(user) -> QuerySet[Membership]:
    """The memberships that open the portal: an active user's, of active merchants. Being staff grants nothing."""
    if not (getattr(user, "is_authenticated", False) and user.is_active):
        return Membership.objects.none()
    return Membership.objects.filter(user=user, merchant__is_active=True).select_related("merchant")


def has_portal_access(user) -> bool:
    return portal_memberships(user).exists()


def current_membership(request, memberships: list[Membership]) -> Membership:
    chosen = request.session.get(SESSION_MERCHANT_KEY)
    return next((m for m in memberships if m.merchant_id == chosen), memberships[0])


def merchant_view(view=None, *, owner_only: bool = False):
    """Log-in required, a membership of an active merchant required, and for owner actions the
    owner role (403 for members). Responses are marked private: they hold one merchant's data."""

    def decorate(view_func):
        @wraps(view_func)
        def wrapped(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path(), reverse("merchant:login"))
            memberships = list(portal_memberships(request.user))
            if not memberships:
                return render(request, "merchant/no_access.html", status=403)
            request.memberships = memberships
            request.membership = current_membership(request, memberships)
            request.merchant = request.membership.merchant
            if owner_only and not request.membership.is_owner:
                return render(request, "merchant/owner_only.html", status=403)
            response = view_func(request, *args, **kwargs)
            patch_cache_control(response, private=True)
            return response

        return wrapped

    return decorate(view) if view is not None else decorate


def merchant_payments(request) -> QuerySet[Payment]:
    return Payment.objects.filter(merchant=request.merchant)


def merchant_payment_or_404(request, public_id: str) -> Payment:
    """The current merchant's payment; any other merchant's answers exactly like one that does not exist."""
    try:
        return merchant_payments(request).get(public_id=public_id)
    except Payment.DoesNotExist:
        raise Http404("No such payment.") from None
