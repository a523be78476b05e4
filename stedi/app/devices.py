"""OWASP's device cookies: a browser that logged in to an account gets a signed cookie
naming the account and a random device id. A login attempt that carries one for
the account it tries is limited per device (see limits.LoginLimits), not with the
unknown clients that someone else may have locked out.
"""

from __future__ import annotations

import secrets

from itsdangerous import BadSignature, URLSafeTimedSerializer

DEVICE_COOKIE = "stedi_device"
DEVICE_SECONDS = 30 * 24 * 3600


class DeviceCookies:
    def __init__(self, secret: str, max_age: int = DEVICE_SECONDS):
        self.signer = URLSafeTimedSerializer(secret, salt="stedi-device")
        self.max_age = max_age

    def issue(self, account: str) -> str:
        return self.signer.dumps({"account": account, "device": secrets.token_urlsafe(16)})

    def device(self, cookie: str | None, account: str) -> str | None:
        """The device id of a valid, unexpired cookie issued for `account`; None otherwise."""
        if not cookie:
            return None
        try:
            claims = self.signer.loads(cookie, max_age=self.max_age)
        except BadSignature:  # also a forged, altered or expired cookie
            return None
        if not isinstance(claims, dict) or claims.get("account") != account:
            return None
        device = claims.get("device")
        return device if isinstance(device, str) else None
