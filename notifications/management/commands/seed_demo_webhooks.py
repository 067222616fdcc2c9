import os

from django.conf import settings
from django.core.management.base import BaseCommand

from notifications.endpoints import webhook_endpoint_create
from payments.models import Merchant


class Command(BaseCommand):
    help = "On a laptop, point the first demo merchant's webhooks at the built-in receiver (/dev/webhooks/)."

    def handle(self, *args, **options):
        if not (settings.DEBUG and settings.WEBHOOKS_ALLOW_LOOPBACK):
            self.stdout.write("Skipped: the development receiver needs DJANGO_DEBUG and WEBHOOKS_ALLOW_LOOPBACK.")
            return
        merchant = Merchant.objects.filter(slug="fjord-coffee").first()
        if merchant is None:
            return
        url = f"http://127.0.0.1:{os.environ.get('PAYDESK_PORT', '8000')}/dev/webhooks/{merchant.slug}/"
        if not merchant.webhook_endpoints.filter(url=url).exists():
            webhook_endpoint_create(merchant=merchant, url=url, description="Built-in development receiver")
