import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from payments.models import Merchant, Payment
from payments.roles import ensure_roles
from payments.states import PaymentStatus


class MerchantFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Merchant
        django_get_or_create = ("slug",)

    name = factory.Sequence(lambda n: f"Merchant {n}")
    slug = factory.Sequence(lambda n: f"merchant-{n}")
    contact_email = factory.Sequence(lambda n: f"billing{n}@merchant.example")


class PaymentFactory(factory.django.DjangoModelFactory):
    """A payment in any state, written directly: for tests of what reads payments.
    Tests of behaviour create payments through payments.services.payment_create."""

    class Meta:
        model = Payment

    merchant = factory.SubFactory(MerchantFactory)
    amount_minor = 1250
    currency = "EUR"
    status = PaymentStatus.PENDING
    payment_method = "tok_success"
    idempotency_key = factory.Sequence(lambda n: f"key-{n}")
    merchant_reference = factory.Sequence(lambda n: f"order-{n}")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@paydesk.example")
    is_staff = True
    password = factory.django.Password("correct horse battery staple")

    @factory.post_generation
    def roles(self, create, extracted, **kwargs):
        if create and extracted:
            ensure_roles()
            self.groups.add(*Group.objects.filter(name__in=extracted))
