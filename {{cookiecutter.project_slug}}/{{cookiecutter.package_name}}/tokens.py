"""Connection tokens: HS256 JWTs, minted by a team's backend, checked by the app.

    from {{ cookiecutter.package_name }}.tokens import mint
    token = mint("alice", name="Alice", rooms=["team-42:*"], ttl=3600)

    python -m {{ cookiecutter.package_name }}.tokens --sub alice --room 'team-42:*'

A token's claims (README, Identity): ``sub`` (the user id) and ``exp`` required;
``name``, ``rooms`` and ``publish`` optional. Any language's JWT library mints the
same token with the same key (AUTH_SECRET). PyJWT does the JWT work: the algorithm
list is fixed to HS256, so ``none`` and algorithm confusion are refused.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import HMACAlgorithm
from jwt.api_jws import PyJWS
from jwt.utils import base64url_decode, base64url_encode

from .settings import PATTERN_RULE, Settings, SettingsError

ALGORITHM = "HS256"
# Clock skew allowed between the backend that mints a token and the dyno.
LEEWAY = 5
# A token rides in one frame; a few hundred bytes is usual, so this bounds what
# verifying one can cost without refusing any real token.
MAX_TOKEN_BYTES = 4096
# sub and name: long enough for any id or display name, short enough to show.
MAX_CLAIM_CHARS = 64
# Claims of the contract; any other is ignored (aud included: PyJWT would refuse
# a token with an audience when none is expected).
DECODE_OPTIONS: Any = {"require": ["sub", "exp"], "verify_aud": False}
# Unicode's control characters (category Cc), which would garble a log or a page.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
NOT_A_JWT = "the token is not a JWT: three base64url parts joined by dots"


class TokenError(ValueError):
    """The token is not valid; the message says why, in words a developer can act
    on, and never contains the token."""


@dataclass(frozen=True, slots=True)
class User:
    """A verified token: who the connection is and what it may do."""

    id: str
    name: str
    expires: float  # the exp claim, seconds since the epoch
    rooms: tuple[str, ...] | None  # room patterns it may join; None: every room
    publish: tuple[str, ...] | None  # ... publish to; None: the same as rooms

    def public(self) -> dict[str, str]:
        """The user as others see it: a message's ``from``, presence."""
        return {"id": self.id, "name": self.name}

    def may_join(self, room: str) -> bool:
        return allows(self.rooms, room)

    def may_publish(self, room: str) -> bool:
        return allows(self.rooms if self.publish is None else self.publish, room)

    def expires_in(self) -> int:
        """The whole seconds left until exp."""
        return max(0, int(self.expires - time.time()))


def allows(patterns: tuple[str, ...] | None, room: str) -> bool:
    if patterns is None:
        return True
    return any(_matcher(pattern)(room) for pattern in patterns)


@functools.lru_cache(maxsize=1024)  # few distinct patterns: compiled once each
def _matcher(pattern: str) -> Callable[[str], object]:
    if pattern == "*":
        return bool
    parts = (re.escape(part) for part in pattern.split("*"))
    return re.compile(".*".join(parts), re.DOTALL).fullmatch


class Verifier:
    """Checks tokens against the current key and then the previous one, so the key
    can be rotated while connections stay open."""

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        self._keys = keys
        self._decoder = _decoder(keys)

    def verify(self, token: str, *, leeway: float = LEEWAY) -> User:
        """The token's user, or TokenError saying what is wrong with it."""
        if not token.isascii():  # base64url and dots only
            raise TokenError(NOT_A_JWT)
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenError(f"the token is longer than {MAX_TOKEN_BYTES} bytes")
        return _user(self._claims(token, leeway))

    def _claims(self, token: str, leeway: float) -> dict[str, Any]:
        for index, key in enumerate(self._keys):
            try:
                claims: dict[str, Any] = self._decoder.decode(
                    token,
                    key,
                    algorithms=[ALGORITHM],
                    leeway=leeway,
                    options=DECODE_OPTIONS,
                )
                return claims
            except jwt.InvalidSignatureError:
                if index + 1 < len(self._keys):
                    continue  # signed before the key was rotated, maybe
                raise TokenError("the signature does not match the key") from None
            except jwt.PyJWTError as error:
                raise TokenError(_reason(error)) from None
        raise TokenError("no key to check the token with")  # keys is never empty


class _PreparedHMAC(HMACAlgorithm):
    """HS256 with the app's keys checked once: PyJWT checks the key again on
    every token (is it PEM, SSH, DER, a JWK?), a fifth of each verification."""

    def __init__(self, keys: tuple[bytes, ...]) -> None:
        super().__init__(HMACAlgorithm.SHA256)
        self._prepared: dict[bytes, bytes] = {}
        for key in keys:
            self._prepared[key] = super().prepare_key(key)

    def prepare_key(self, key: str | bytes) -> bytes:
        prepared = self._prepared.get(key) if isinstance(key, bytes) else None
        return prepared if prepared is not None else super().prepare_key(key)


class _QuickJWS(PyJWS):
    """PyJWT's JWS layer with its check of each segment's alphabet made by one
    regular expression: PyJWT 2.15.1 tests every byte in a Python loop, which was
    two thirds of a verification. The usual segment (base64url, unpadded, of a
    length and last character base64url can make) decodes here; any other goes to
    PyJWT's own, which refuses it with its message. tests/test_tokens.py checks
    that both agree on every segment."""

    @staticmethod
    def _decode_base64url_segment(segment: bytes, name: str) -> bytes:
        if _SEGMENT.fullmatch(segment) and len(segment) % 4 != 1:
            decoded = base64url_decode(segment)
            if base64url_encode(decoded) == segment:  # canonical: no stray bits
                return decoded
        return PyJWS._decode_base64url_segment(segment, name)


# What a compact JWT's segment is made of: the base64url alphabet, no padding.
_SEGMENT = re.compile(rb"[A-Za-z0-9_-]*")


def _decoder(keys: tuple[bytes, ...]) -> jwt.PyJWT:
    """PyJWT's decoder, with HS256 alone, its keys prepared (_PreparedHMAC) and
    its segments decoded quickly (_QuickJWS). Both go in through PyJWT's JWS
    object, an attribute of its own (pinned: 2.15.1), after a check that it and
    the method replaced are there; else PyJWT as it comes, which is only slower."""
    decoder = jwt.PyJWT()
    jws = getattr(decoder, "_jws", None)
    if isinstance(jws, PyJWS) and callable(
        getattr(PyJWS, "_decode_base64url_segment", None)
    ):
        quick = _QuickJWS(algorithms=[ALGORITHM], options=jws.options)
        quick.unregister_algorithm(ALGORITHM)
        quick.register_algorithm(ALGORITHM, _PreparedHMAC(keys))
        decoder._jws = quick
    return decoder


def _reason(error: jwt.PyJWTError) -> str:
    if isinstance(error, jwt.ExpiredSignatureError):
        return "the token has expired (exp is past)"
    if isinstance(error, jwt.InvalidAlgorithmError):
        return f"the algorithm must be {ALGORITHM}"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"the token has no {error.claim} claim"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "the token is not valid yet (nbf or iat is in the future)"
    if isinstance(error, jwt.DecodeError) and "segments" in str(error):
        return NOT_A_JWT
    return f"the token's claims or encoding are wrong: {error}"


def _user(claims: dict[str, Any]) -> User:
    sub = _text(claims, "sub")
    assert sub is not None  # PyJWT checked it is there
    name = _text(claims, "name")
    return User(
        id=sub,
        name=sub if name is None else name,
        expires=float(claims["exp"]),  # PyJWT checked it is a number
        rooms=_patterns(claims, "rooms"),
        publish=_patterns(claims, "publish"),
    )


def _text(claims: dict[str, Any], claim: str) -> str | None:
    value = claims.get(claim)
    if value is None and claim != "sub":
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_CLAIM_CHARS:
        raise TokenError(
            f"the {claim} claim must be a string of 1 to {MAX_CLAIM_CHARS} characters"
        )
    if has_control(value):
        raise TokenError(f"the {claim} claim must not contain control characters")
    return value


def _patterns(claims: dict[str, Any], claim: str) -> tuple[str, ...] | None:
    value = claims.get(claim)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise TokenError(f"the {claim} claim must be a list of strings")
    for pattern in value:
        if not PATTERN_RULE.fullmatch(pattern):
            raise TokenError(
                f"the {claim} claim has {pattern[:64]!r}: a room pattern is 1 to 64 "
                "characters among A-Z a-z 0-9 _ . : - and *"
            )
    # One string per distinct pattern in the process, not one per connection.
    return tuple(sys.intern(pattern) for pattern in value)


def has_control(text: str) -> bool:
    """Whether the text has a control character (Unicode category Cc: NUL, tab,
    newline, escape, ...), which would garble a log line or a page."""
    return CONTROL.search(text) is not None


# ------------------------------------------------------------------------ minting


def mint(
    sub: str,
    *,
    ttl: float = 3600,
    name: str | None = None,
    rooms: Sequence[str] | None = None,
    publish: Sequence[str] | None = None,
    key: bytes | None = None,
) -> str:
    """A connection token for user ``sub``, valid for ``ttl`` seconds, signed with
    ``key`` or else AUTH_SECRET. ``rooms`` and ``publish`` are room patterns (``*``
    stands for any run of characters); left out, the user may join and publish
    everywhere. Raises ValueError for a claim the app would refuse."""
    if key is None:
        settings = Settings.from_env()
        if settings.auth_key_random:
            raise SettingsError("AUTH_SECRET is not set: it is the key tokens need")
        key = settings.auth_keys[0]
    expires = int(time.time() + ttl)
    claims: dict[str, Any] = {"sub": sub, "exp": expires, "iat": int(time.time())}
    if name is not None:
        claims["name"] = name
    if rooms is not None:
        claims["rooms"] = list(rooms)
    if publish is not None:
        claims["publish"] = list(publish)
    try:
        _user(claims)  # the rules the app checks, before anyone is handed the token
    except TokenError as error:
        raise ValueError(str(error)) from None
    return jwt.encode(claims, key, algorithm=ALGORITHM)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m {{ cookiecutter.package_name }}.tokens",
        description="Print a connection token signed with AUTH_SECRET.",
    )
    parser.add_argument("--sub", required=True, help="the user id, e.g. alice")
    parser.add_argument("--name", help="the display name others see")
    parser.add_argument(
        "--room",
        action="append",
        dest="rooms",
        metavar="PATTERN",
        help="a room pattern the user may join, e.g. 'team-42:*' (repeatable; "
        "none: every room)",
    )
    parser.add_argument(
        "--publish",
        action="append",
        metavar="PATTERN",
        help="a room pattern the user may publish to (repeatable; none: as --room)",
    )
    parser.add_argument(
        "--ttl", type=float, default=3600, help="seconds it lasts (default 3600)"
    )
    args = parser.parse_args(argv)
    if args.ttl <= 0:
        parser.error("--ttl must be greater than 0")
    try:
        token = mint(
            args.sub,
            ttl=args.ttl,
            name=args.name,
            rooms=args.rooms,
            publish=args.publish,
        )
    except ValueError as error:  # SettingsError included
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
