"""Settings from the environment: names, defaults, and errors that name the variable."""

from __future__ import annotations

import pytest

from app.settings import Settings, SettingsError, fields, variable


def test_defaults_and_values_from_a_mapping() -> None:
    s = Settings.from_env({})
    assert (s.rules, s.scenarios, s.partitions, s.fast_drain, s.loop) == (
        ("boostfeel", "rfm"), ("all",), 8, False, "uvloop")
    s = Settings.from_env({"LOYALTY_RULES": " rfm, netix ,", "LOYALTY_PARTITIONS": "3", "LOYALTY_FAST_DRAIN": "yes",
                           "LOYALTY_SCENARIOS": "none", "UNRELATED": "x", "LOYALTY_WEB_PORT": "7000"})
    assert (s.rules, s.scenarios, s.partitions, s.fast_drain, s.web_port) == (
        ("rfm", "netix"), ("none",), 3, True, 7000)


def test_an_empty_variable_counts_as_unset() -> None:
    s = Settings.from_env({"LOYALTY_PARTITIONS": "", "LOYALTY_TIMEZONE": "", "LOYALTY_BATCH_WITHIN": ""})
    assert (s.partitions, s.timezone, s.batch_within) == (8, "UTC", 0.05)


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOYALTY_PARTITIONS", "5")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker-1:9093,broker-2:9093")
    s = Settings.from_env()
    assert (s.partitions, s.kafka_bootstrap) == (5, "broker-1:9093,broker-2:9093")


@pytest.mark.parametrize(("name", "value", "words"), [
    ("LOYALTY_PARTITIONS", "abc", "valid integer, unable to parse string as an integer, got 'abc'"),
    ("LOYALTY_PARTITIONS", "0", "greater than or equal to 1"),
    ("LOYALTY_TIMEZONE", "Mars/Base", "unknown time zone 'Mars/Base'"),
    ("LOYALTY_LOOP", "trio", "'uvloop' or 'asyncio', got 'trio'"),
    ("LOYALTY_RULES", " , ", "name at least one rule set"),
    ("LOYALTY_CLOCK", "yesterday", "ISO 8601 instant with offset"),
    ("LOYALTY_CLOCK", "2026-01-01T00:00:00", "needs a UTC offset"),
    ("LOYALTY_BATCH_WITHIN", "-1", "greater than 0"),
    ("LOYALTY_FAST_DRAIN", "maybe", "valid boolean"),
    ("LOYALTY_STALL_ACTION", "reboot", "'none', 'seek' or 'exit'"),
])
def test_an_invalid_value_names_its_variable(name: str, value: str, words: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({name: value})
    assert err.value.name == name
    assert str(err.value).startswith(f"{name}: ")
    assert words in str(err.value)
    assert "\n" not in str(err.value)  # one line, no pydantic dump


def test_settings_are_frozen_and_every_field_is_documented() -> None:
    s = Settings.from_env({})
    with pytest.raises(ValueError):
        s.partitions = 3  # type: ignore[misc]
    names = [variable(f) for f in fields()]
    assert len(names) == len(set(names)) >= 40
    for field, info in fields().items():
        assert info.description, f"{variable(field)} has no description"
        assert variable(field) == "KAFKA_BOOTSTRAP_SERVERS" or variable(field) == "REDIS_URL" \
            or variable(field).startswith("LOYALTY_"), field


@pytest.mark.parametrize(("env", "words"), [
    ({"LOYALTY_WEB_HOST": "0.0.0.0"}, "required to serve on 0.0.0.0"),
    ({"LOYALTY_WEB_HOST": "10.0.0.5", "LOYALTY_API_TOKEN": "REPLACE-ME"}, "at least 16 characters"),
    ({"LOYALTY_WEB_HOST": "worker.example"}, "required to serve on worker.example"),
])
def test_serving_beyond_loopback_needs_a_real_token(env: dict[str, str], words: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env).check_serving()
    assert err.value.name == "LOYALTY_API_TOKEN" and words in str(err.value)


@pytest.mark.parametrize("env", [
    {}, {"LOYALTY_WEB_HOST": "127.0.0.1"}, {"LOYALTY_WEB_HOST": "::1"}, {"LOYALTY_WEB_HOST": "localhost"},
    {"LOYALTY_WEB_HOST": "0.0.0.0", "LOYALTY_API_TOKEN": "0123456789abcdef"},
    {"LOYALTY_WEB_HOST": "0.0.0.0", "LOYALTY_ALLOW_NO_TOKEN": "true"},
])
def test_loopback_a_real_token_or_an_explicit_opt_out_may_serve(env: dict[str, str]) -> None:
    Settings.from_env(env).check_serving()
