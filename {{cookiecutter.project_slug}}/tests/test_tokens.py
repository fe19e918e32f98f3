"""The token module: the verifier under property-based fuzzing, and the helper a
team's backend or a script mints tokens with (its function and command line)."""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time

import jwt
import pytest
from conftest import PROJECT_ROOT
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from jwt.api_jws import PyJWS

from {{ cookiecutter.package_name }}.tokens import TokenError, Verifier, _QuickJWS, mint

KEY = b"current-key-" + b"0" * 32
PREVIOUS = b"previous-key-" + b"1" * 32
OTHER = b"other-key-" + b"2" * 32
VERIFIER = Verifier((KEY, PREVIOUS))
# A fixed expiry far ahead (2100), so hypothesis replays the very same tokens.
FAR = 4102444800

# HS384 and HS512 tokens are made on purpose, with keys shorter than PyJWT likes.
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed_with_a_key(token: str) -> bool:
    """Whether the token's third part is the HS256 signature of its first two by
    one of the verifier's keys: computed here, independently of PyJWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return False
    signing_input = f"{parts[0]}.{parts[1]}".encode()
    try:
        signature = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
    except ValueError:
        return False
    return any(
        hmac.compare_digest(
            hmac.new(key, signing_input, hashlib.sha256).digest(), signature
        )
        for key in (KEY, PREVIOUS)
    )


def outcome(token: str):
    """The verifier's user, or its TokenError; anything else it raises fails."""
    try:
        return VERIFIER.verify(token)
    except TokenError as error:
        assert str(error), "a TokenError must say why"
        return error


def check(token: str) -> None:
    result = outcome(token)
    if isinstance(result, TokenError):
        event(f"refused: {str(result)[:40]}")
        return
    event("accepted")
    assert signed_with_a_key(token), "accepted a token no key of ours signed"


def claims_strategy():
    text = st.text(max_size=80)
    value = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3)
        ),
        max_leaves=8,
    )
    return st.fixed_dictionaries(
        {},
        optional={
            "sub": text | value,
            "exp": st.integers(0, 2**40) | st.floats(allow_nan=False) | value,
            "name": text | value,
            "rooms": st.lists(text, max_size=4) | value,
            "publish": st.lists(text, max_size=4) | value,
            "nbf": st.integers(0, 2**40) | value,
            "iat": st.integers(0, 2**40) | value,
            "aud": text | value,
        },
    )


FUZZ = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@FUZZ
@given(st.text(max_size=300))
@example("")
@example("..")
@example("a.b.c")
@example("e30.e30.")
def test_random_text_is_refused_with_a_token_error(token):
    check(token)


@FUZZ
@given(
    claims_strategy(),
    st.sampled_from([KEY, PREVIOUS, OTHER]),
    st.sampled_from(["HS256", "HS384", "HS512"]),
)
def test_tokens_with_any_claims_any_key_and_hmac_algorithm(claims, key, algorithm):
    try:
        token = jwt.encode(claims, key, algorithm=algorithm)
    except (TypeError, ValueError):
        return  # a claim PyJWT cannot encode (a float exp it rejects, ...)
    check(token)


@FUZZ
@given(st.data())
def test_mutated_valid_tokens_are_refused_unless_still_signed(data):
    token = jwt.encode(
        {"sub": "alice", "exp": FAR, "rooms": ["lobby"]},
        data.draw(st.sampled_from([KEY, PREVIOUS])),
        algorithm="HS256",
    )
    mutation = data.draw(
        st.sampled_from(["flip", "insert", "delete", "part", "header"])
    )
    chars = list(token)
    if mutation == "header":  # another algorithm named, the signature kept
        header = data.draw(
            st.sampled_from(
                [
                    {"alg": "none", "typ": "JWT"},
                    {"alg": "HS512", "typ": "JWT"},
                    {"alg": "RS256", "typ": "JWT"},
                    {"alg": "HS256", "typ": "JWT", "kid": "x"},
                    {"typ": "JWT"},
                ]
            )
        )
        token = ".".join([b64(json.dumps(header).encode()), *token.split(".")[1:]])
    elif mutation == "part":  # one part swapped for random base64url
        index = data.draw(st.integers(0, 2))
        parts = token.split(".")
        parts[index] = b64(data.draw(st.binary(max_size=64)))
        token = ".".join(parts)
    else:
        position = data.draw(st.integers(0, len(chars) - 1))
        if mutation == "flip":
            chars[position] = data.draw(st.sampled_from("AZaz09-_.=+/ é"))
        elif mutation == "insert":
            chars.insert(position, data.draw(st.characters()))
        else:
            del chars[position]
        token = "".join(chars)
    check(token)


def pyjwt_segment(segment: bytes):
    """PyJWT's own decoding of one segment: its bytes, or its DecodeError's text."""
    try:
        return PyJWS._decode_base64url_segment(segment, "payload")
    except jwt.DecodeError as error:
        return str(error)


def quick_segment(segment: bytes):
    try:
        return _QuickJWS._decode_base64url_segment(segment, "payload")
    except jwt.DecodeError as error:
        return str(error)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=40).map(lambda raw: b64(raw).encode()),  # a real segment
        st.text(alphabet="AZaz09-_=+/.! ", max_size=24).map(str.encode),
        st.binary(max_size=24),
    )
)
@example(b"QQ")  # "A", canonical
@example(b"QR")  # "A" with stray bits: not canonical
@example(b"QUI=")  # padded
@example(b"Q")  # a length base64url cannot have
def test_the_quick_segment_decoding_agrees_with_pyjwt(segment):
    """The verifier's segment decoding (tokens._QuickJWS) returns what PyJWT's
    would, and refuses what PyJWT's would, with its message."""
    assert quick_segment(segment) == pyjwt_segment(segment)


def test_the_verifier_uses_the_quick_segment_decoding():
    """Else the pinned PyJWT changed where tokens._decoder reaches in."""
    assert isinstance(VERIFIER._decoder._jws, _QuickJWS)


@pytest.mark.parametrize(
    ("key", "accepted"),
    [(KEY, True), (PREVIOUS, True), (OTHER, False)],
    ids=["current", "previous", "other"],
)
def test_the_current_and_previous_keys_are_accepted_and_no_other(key, accepted):
    token = jwt.encode({"sub": "a", "exp": time.time() + 60}, key, algorithm="HS256")
    assert isinstance(outcome(token), TokenError) is not accepted


# ----------------------------------------------------------------------- minting


def test_mint_makes_a_token_any_jwt_library_reads():
    token = mint(
        "alice",
        name="Alice",
        rooms=["team-42:*"],
        publish=["team-42:chat"],
        ttl=120,
        key=KEY,
    )
    claims = jwt.decode(token, KEY, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    assert claims["name"] == "Alice"
    assert claims["rooms"] == ["team-42:*"]
    assert claims["publish"] == ["team-42:chat"]
    assert 115 <= claims["exp"] - time.time() <= 120
    user = VERIFIER.verify(token)
    assert user.may_join("team-42:general")
    assert not user.may_publish("team-42:general")


@pytest.mark.parametrize(
    "claims",
    [{"sub": "x" * 65}, {"sub": "a", "name": ""}, {"sub": "a", "rooms": ["bad room"]}],
    ids=["long-sub", "empty-name", "bad-pattern"],
)
def test_mint_refuses_what_the_app_would_refuse(claims):
    sub = claims.pop("sub")
    with pytest.raises(ValueError):
        mint(sub, key=KEY, **claims)


def run_cli(*args, **env):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AUTH_")}
    return subprocess.run(
        [sys.executable, "-m", "{{ cookiecutter.package_name }}.tokens", *args],
        cwd=PROJECT_ROOT,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_command_line_prints_a_token_signed_with_auth_secret():
    secret = "cli-secret-" + "9" * 32
    result = run_cli(
        "--sub",
        "alice",
        "--name",
        "Alice",
        "--room",
        "team-42:*",
        "--room",
        "user:alice",
        "--ttl",
        "60",
        AUTH_SECRET=secret,
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    claims = jwt.decode(token, secret, algorithms=["HS256"])
    assert claims["rooms"] == ["team-42:*", "user:alice"]
    assert claims["name"] == "Alice"
    assert "publish" not in claims


def test_the_command_line_needs_auth_secret():
    result = run_cli("--sub", "alice")
    assert result.returncode == 2
    assert "AUTH_SECRET" in result.stderr
    assert result.stdout == ""


def test_the_command_line_names_a_refused_claim():
    result = run_cli("--sub", "x" * 65, AUTH_SECRET="k" * 32)
    assert result.returncode == 2
    assert "sub" in result.stderr
