"""Password reset without a timing oracle and without a mail cannon.

The request only records a `PasswordResetRequest` and enqueues `send_password_reset`: the same
writes, the same time, whether the address belongs to an account or not. The job looks the
accounts up and sends the e-mail (Django's PasswordResetForm.save, with the form class and
templates of the page that asked). Requests are limited per e-mail address and per client
address (backoffice.client_address) over PASSWORD_RESET_WINDOW_SECONDS, counted in the database.
"""

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.db import transaction
from django.http import HttpResponseRedirect
from django.utils import timezone
from django.utils.module_loading import import_string

from backoffice.client_address import client_address
from backoffice.models import PasswordResetRequest
from backoffice.services import job_enqueue

SEND_JOB = "backoffice.password_reset.send_password_reset"
# Rows older than this are only history: the job deletes them as it goes.
KEEP_FOR = timedelta(days=1)


class TooManyResetRequests(Exception):
    """Over the limit for this e-mail address or this client address (same words for both)."""


def password_reset_request(*, email: str, client_address: str, sender: dict) -> PasswordResetRequest:
    """Check the limits, record the request and enqueue its e-mail, in one transaction;
    nothing here depends on whether the address has an account. `sender`: the form class
    path, templates, domain and scheme the job sends with (plain values)."""
    email = email.strip().lower()
    since = timezone.now() - timedelta(seconds=settings.PASSWORD_RESET_WINDOW_SECONDS)
    recent = PasswordResetRequest.objects.filter(created_at__gte=since)
    with transaction.atomic():
        if (
            recent.filter(email=email).count() >= settings.PASSWORD_RESET_LIMIT_PER_EMAIL
            or recent.filter(client_address=client_address).count() >= settings.PASSWORD_RESET_LIMIT_PER_CLIENT
        ):
            raise TooManyResetRequests
        reset = PasswordResetRequest.objects.create(email=email, client_address=client_address)
        job_enqueue(func=SEND_JOB, kwargs={"request_id": reset.pk, **sender}, queue="default", max_attempts=3)
    return reset


def send_password_reset(
    *,
    request_id: int,
    form_class: str,
    email_template_name: str,
    subject_template_name: str,
    domain: str,
    use_https: bool,
) -> None:
    """Job: e-mail a reset link to each active account of the address that the form allows
    (none for an unknown address: nothing is sent, nothing is said)."""
    reset = PasswordResetRequest.objects.filter(pk=request_id).first()
    PasswordResetRequest.objects.filter(created_at__lt=timezone.now() - KEEP_FOR).delete()
    if reset is None:
        return
    form = import_string(form_class)({"email": reset.email})
    if not form.is_valid():
        return
    form.save(
        domain_override=domain,
        use_https=use_https,
        email_template_name=email_template_name,
        subject_template_name=subject_template_name,
    )


class QueuedPasswordResetView(auth_views.PasswordResetView):
    """Django's PasswordResetView, except that the request only records and enqueues (see the
    module): over a limit, the form says so (429), the same for every address."""

    def form_valid(self, form):
        sender = {
            "form_class": f"{self.form_class.__module__}.{self.form_class.__qualname__}",
            "email_template_name": self.email_template_name,
            "subject_template_name": self.subject_template_name,
            "domain": self.request.get_host(),
            "use_https": self.request.is_secure(),
        }
        try:
            password_reset_request(
                email=form.cleaned_data["email"], client_address=client_address(self.request), sender=sender
            )
        except TooManyResetRequests:
            form.add_error(None, "Too many password reset requests. Try again in an hour.")
            response = self.form_invalid(form)
            response.status_code = 429
            return response
        return HttpResponseRedirect(self.get_success_url())
