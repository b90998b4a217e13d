"""Settings from the environment: names, defaults, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

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
        assert variable(field).startswith(("KAFKA_", "LOYALTY_")) or variable(field) == "REDIS_URL", field


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


@pytest.mark.parametrize(("env", "variable_named", "words"), [
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KAFKA_SASL_USERNAME", "required"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u"}, "KAFKA_SASL_PASSWORD", "required"),
    ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL", "'SASL_SSL'"),
    ({"KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
    ({"KAFKA_SSL_CAFILE": "/no/such/ca.pem"}, "KAFKA_SSL_CAFILE", "cannot read"),
    ({"KAFKA_SSL_CERTFILE": "/etc/hostname"}, "KAFKA_SSL_KEYFILE", "go together"),
    ({"LOYALTY_MIN_INSYNC_REPLICAS": "2"}, "LOYALTY_MIN_INSYNC_REPLICAS", "LOYALTY_REPLICATION_FACTOR=1"),
    ({"LOYALTY_REPLICATION_FACTOR": "0"}, "LOYALTY_REPLICATION_FACTOR", "greater than or equal to 1"),
    ({"KAFKA_SASL_PASSWORD_FILE": "/no/such/file"}, "KAFKA_SASL_PASSWORD_FILE", "cannot read"),
    ({"LOYALTY_ADVERTISED_URL": "pod-1:6066"}, "LOYALTY_ADVERTISED_URL", "http://"),
    ({"LOYALTY_LOG_LEVEL": "loud"}, "LOYALTY_LOG_LEVEL", "'warning'"),
    ({"LOYALTY_CONNECT_TIMEOUT": "0"}, "LOYALTY_CONNECT_TIMEOUT", "greater than 0"),
    ({"LOYALTY_WEB_PORT": "70000"}, "LOYALTY_WEB_PORT", "65535"),
])
def test_security_and_durability_settings_fail_with_one_line_naming_the_variable(
        env: dict[str, str], variable_named: str, words: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert str(err.value).startswith(f"{variable_named}: ")
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_secrets_come_from_files_and_are_masked(tmp_path: Path) -> None:
    from app.settings import masked

    secret = tmp_path / "sasl"
    secret.write_text("s3cret-from-file\n")
    s = Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "loyalty",
                           "KAFKA_SASL_PASSWORD_FILE": str(secret), "REDIS_URL": "redis://app:pw@redis:6379/0",
                           "LOYALTY_API_TOKEN": "t" * 32, "LOYALTY_LOG_LEVEL": "WARNING"})
    assert s.kafka_sasl_password.get_secret_value() == "s3cret-from-file"
    assert s.log_level == "warning"
    shown = masked(s)
    text = repr(s) + str(shown)
    for value in ("s3cret-from-file", "pw@", "t" * 32):
        assert value not in text
    assert shown["KAFKA_SASL_PASSWORD"] == "***" and shown["REDIS_URL"] == "redis://app:***@redis:6379/0"
    assert set(shown) == {variable(f) for f in fields()}


def test_kafka_client_options_carry_tls_and_sasl(tmp_path: Path) -> None:
    import ssl

    from app.wire.kafka_conn import faust_credentials, options

    plain = options(Settings.from_env({}))
    assert plain == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}
    assert faust_credentials(Settings.from_env({})) is None
    s = Settings.from_env({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u",
                           "KAFKA_SASL_PASSWORD": "p", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
                           "KAFKA_SSL_CHECK_HOSTNAME": "false"})
    opts = options(s)
    assert opts["security_protocol"] == "SASL_SSL" and opts["sasl_mechanism"] == "SCRAM-SHA-256"
    assert (opts["sasl_plain_username"], opts["sasl_plain_password"]) == ("u", "p")
    assert isinstance(opts["ssl_context"], ssl.SSLContext) and not opts["ssl_context"].check_hostname
    creds = faust_credentials(s)
    assert creds.protocol.value == "SASL_SSL" and creds.mechanism.value == "SCRAM-SHA-256"
    assert "p" not in repr(creds).replace("<SASLCredentials: username=u>", "")
