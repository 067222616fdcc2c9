import json

import pytest

from backoffice.bulk import bulk_action_enqueue
from backoffice.runner import run_job
from notifications.models import Notification

pytestmark = pytest.mark.django_db


def test_canceling_many_payments_tells_the_merchant_like_one_cancel(admin_user, make_payment, endpoint):
    payments = [make_payment(), make_payment()]
    job = bulk_action_enqueue(
        handler="payments.bulk.payments_cancel_many",
        ids=[payment.pk for payment in payments],
        reason="asked",
        requested_by=admin_user,
        verb="cancel",
    )

    run_job(str(job.pk))

    for payment in payments:
        notification = Notification.objects.get(payment=payment, event_type="payment.canceled")
        assert notification.payment_event.to_status == "canceled"
        assert json.loads(notification.body)["data"]["previous_status"] == "pending"
