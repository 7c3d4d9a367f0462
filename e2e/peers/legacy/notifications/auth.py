"""JWT authentication of WebSocket handshakes from the ``token`` query parameter."""

from urllib.parse import parse_qs

import jwt
from django.conf import settings


def claims_from_token(token):
    """The claims of a valid HS256 token carrying ``user_id`` and ``exp``, else None."""
    try:
        claims = jwt.decode(
            token,
            settings.JWT_SECRET,
            algorithms=["HS256"],
            options={"require": ["exp", "user_id"]},
        )
    except jwt.InvalidTokenError:
        return None
    user_id = claims["user_id"]
    if not isinstance(user_id, (str, int)) or isinstance(user_id, bool) or str(user_id) == "":
        return None
    return claims


class JwtQueryAuthMiddleware:
    """Puts the token's claims into ``scope["jwt_claims"]`` (None when absent or invalid)."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        token = query.get("token", [None])[0]
        claims = claims_from_token(token) if token else None
        return await self.inner(dict(scope, jwt_claims=claims), receive, send)
