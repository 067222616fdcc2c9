"""Who does something: a user (staff or a merchant's), or nobody when the system acts."""

from django.contrib.auth.models import AnonymousUser, User

Actor = User | AnonymousUser | None
