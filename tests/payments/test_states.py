"""Every allowed and every refused transition of the payment state machine."""

import itertools

import pytest
from django_fsm import TransitionNotAllowed

from payments.models import Payment
from payments.states import TRANSITIONS, PaymentStatus
from tests.factories import PaymentFactory

ALL_STATES = PaymentStatus.values
CASES = list(itertools.product(TRANSITIONS, ALL_STATES))


@pytest.mark.parametrize(("name", "source"), CASES, ids=[f"{n}-from-{s}" for n, s in CASES])
def test_transition_allowed_exactly_from_its_sources(name, source):
    sources, target = TRANSITIONS[name]
    payment = Payment(status=source)
    if source in sources:
        getattr(payment, name)()
        assert payment.status == target
    else:
        with pytest.raises(TransitionNotAllowed):
            getattr(payment, name)()
        assert payment.status == source


def test_the_model_declares_the_table_of_states_py():
    declared = {
        (transition.name, transition.source, transition.target)
        for transition in Payment._meta.get_field("status").get_all_transitions(Payment)
    }
    expected = {(name, source, target) for name, (sources, target) in TRANSITIONS.items() for source in sources}
    assert declared == expected


def test_design_graph():
    reachable = {(source, target) for sources, target in TRANSITIONS.values() for source in sources}
    assert reachable == {
        ("pending", "processing"),
        ("pending", "canceled"),
        ("processing", "succeeded"),
        ("processing", "failed"),
        ("processing", "unknown"),
        ("unknown", "succeeded"),
        ("unknown", "failed"),
        ("failed", "pending"),
        ("succeeded", "partially_refunded"),
        ("succeeded", "refunded"),
        ("partially_refunded", "partially_refunded"),
        ("partially_refunded", "refunded"),
    }


def test_status_cannot_be_assigned_directly():
    payment = Payment(status=PaymentStatus.PENDING)
    with pytest.raises(AttributeError):
        payment.status = PaymentStatus.SUCCEEDED


@pytest.mark.django_db
def test_database_refuses_a_status_outside_the_table(merchant):
    from django.db import IntegrityError, transaction

    payment = PaymentFactory(merchant=merchant)
    with pytest.raises(IntegrityError), transaction.atomic():
        Payment.objects.filter(pk=payment.pk).update(status="teleported")


@pytest.mark.django_db
def test_database_refuses_non_positive_amounts(merchant):
    from django.db import IntegrityError, transaction

    payment = PaymentFactory(merchant=merchant)
    with pytest.raises(IntegrityError), transaction.atomic():
        Payment.objects.filter(pk=payment.pk).update(amount_minor=0)
