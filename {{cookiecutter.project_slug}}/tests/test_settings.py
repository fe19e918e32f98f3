"""Settings: a bad value stops the app at once with one line; good ones are taken."""

import pytest

BAD_SETTINGS = [
    ("WS_PING_INTERVAL", "abc", "abc"),
    ("WS_PING_INTERVAL", "0", "0"),
    ("WS_PING_INTERVAL", "-1", "-1"),
    ("WS_PING_INTERVAL", "55", "55"),
    ("WS_PING_INTERVAL", "60", "60"),
    ("WS_PING_INTERVAL", "nan", "nan"),
    ("WS_PING_TIMEOUT", "soon", "soon"),
    ("WS_MAX_MESSAGE_BYTES", "64k", "64k"),
    ("WS_MAX_CONNECTIONS", "many", "many"),
    ("WS_MAX_ROOMS", "ten", "ten"),
    ("WS_RATE_LIMIT", "fast", "fast"),
    ("WS_RATE_BURST", "lots", "lots"),
    ("WS_MAX_PENDING_BYTES", "1MB", "1MB"),
    ("PORT", "web", "web"),
    ("WS_COMPRESSION", "maybe", "maybe"),
    ("REDIS_TLS_VERIFY", "perhaps", "perhaps"),
    ("LOG_LEVEL", "chatty", "chatty"),
    # A URL may hold a password: its scheme names it well enough.
    ("REDIS_URL", "http://x", "http"),
    ("REDIS_URL", "http://user:s3cret@x:6379", "http"),
]


@pytest.mark.parametrize(
    ("variable", "value", "shown"),
    BAD_SETTINGS,
    ids=[f"{variable}={value}" for variable, value, _ in BAD_SETTINGS],
)
def test_bad_setting_stops_the_app_with_one_line(run_app, variable, value, shown):
    result = run_app(**{variable: value})
    assert result.returncode != 0
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{result.stdout}"
    assert variable in lines[0]
    assert shown in lines[0]
    assert "s3cret" not in result.stdout


@pytest.mark.parametrize(
    "settings",
    [
        {"WS_PING_INTERVAL": "0.5"},
        {"WS_PING_INTERVAL": "54.9", "WS_PING_TIMEOUT": "0.5"},
        {"WS_RATE_LIMIT": "0.5"},
    ],
    ids=lambda settings: ",".join(f"{k}={v}" for k, v in settings.items()),
)
def test_decimal_durations_are_accepted(start_app, ws_client, settings):
    app = start_app(**settings)
    assert app.healthz()[0] == 200
    ws_client(app).assert_alive()
