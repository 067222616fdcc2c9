"""Who does something: a user (staff or a merchant's), or nobody when the system acts.

The one place that names the user model for types. AUTH_USER_MODEL is Django's own
`auth.User`; a custom user model would change the import here and nowhere else."""

from django.contrib.auth.models import AnonymousUser, User

Actor = User | AnonymousUser | None
"""What a service is told acted: `request.user` from a view (anonymous callers are refused
before any write), a user loaded by a job, or None for the system."""


def actor_user(actor: Actor) -> User | None:
    """The user to record on a row (`requested_by`, `actor`): None for the system or an anonymous caller."""
    return actor if isinstance(actor, User) and actor.pk else None
