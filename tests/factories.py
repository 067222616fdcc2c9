import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db.models import Q

from payments.models import Merchant, Payment
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
            self.groups.add(*(restore_role(name) for name in extracted))


# Every app's grants to each role, as the migrations made them (tests/conftest.py reads them once).
ROLES_AS_MIGRATED: dict[str, list[tuple[str, str]]] = {}


def remember_roles_as_migrated() -> None:
    for group in Group.objects.prefetch_related("permissions__content_type"):
        ROLES_AS_MIGRATED[group.name] = [(p.content_type.app_label, p.codename) for p in group.permissions.all()]


def restore_role(name: str) -> Group:
    """The role with its migrated permissions, also after a transactional test flushed them."""
    group, _ = Group.objects.get_or_create(name=name)
    if ROLES_AS_MIGRATED.get(name):
        wanted = Q()
        for app_label, codename in ROLES_AS_MIGRATED[name]:
            wanted |= Q(content_type__app_label=app_label, codename=codename)
        group.permissions.add(*Permission.objects.filter(wanted))
    return group
