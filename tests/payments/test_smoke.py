import pytest

from payments.jobs import process_payment
from payments.models import SimulatedGatewayRecord


@pytest.mark.django_db
def test_smoke(make_payment):
    payment = make_payment()
    assert process_payment(payment.pk) == {"status": "succeeded"}
    assert process_payment(payment.pk) == {"skipped": "nothing to process"}
    assert SimulatedGatewayRecord.objects.count() == 1
