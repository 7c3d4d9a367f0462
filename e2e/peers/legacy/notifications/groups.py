"""Channel-layer group names shared by the consumer (joining) and the publish endpoint."""

import re

#: Every connected user is in this group: system alerts go to everyone.
ALERTS = "alerts"
#: Message types the consumer has handlers for; group_send of any other type would make the
#: receiving consumers fail, so the publish endpoint refuses them.
PUSH_TYPES = ("notification", "alert", "order_update", "material_update")

# channels' own rule for group names (ASCII alphanumerics, '-', '_', '.'; under 100 chars).
_VALID = re.compile(r"^[A-Za-z0-9._-]{1,99}$")
_SHARED = re.compile(r"^group_[0-9]+$")


def user_group(user_id):
    """The personal group of ``user_id``, or None when the id cannot name a group."""
    name = f"user_{user_id}"
    return name if _VALID.match(name) else None


def shared_group(claim):
    """The shared (per-department) group named by a token's ``group`` claim, or None."""
    if isinstance(claim, bool) or not isinstance(claim, (int, str)):
        return None
    name = f"group_{claim}"
    return name if _SHARED.match(name) else None


def is_publishable(group):
    """Whether the publish endpoint may address ``group`` by name."""
    return group == ALERTS or bool(_SHARED.match(group))
