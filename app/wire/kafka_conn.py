"""How every Kafka client of the service connects: brokers, TLS and SASL, from the settings.

One place builds the options so the worker (Faust), the projector's and the gap filler's
consumers and every CLI command connect alike: :func:`options` for aiokafka clients,
:func:`faust_credentials` for the Faust app. :func:`wait_for_kafka` is the start-up check:
it retries an unreachable cluster for ``LOYALTY_CONNECT_TIMEOUT`` seconds (saying so once)
and stops at once, with one line, on what retrying cannot fix (wrong credentials, TLS).
Passwords are read from the settings' secret fields and never logged.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from typing import Any

from app.errors import AppError
from app.settings import Settings

log = logging.getLogger("loyalty.kafka")


class KafkaUnavailable(AppError):
    """The Kafka cluster could not be reached or refused the service's credentials."""


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of ``KAFKA_SSL_*`` (None without TLS)."""
    if not settings.kafka_tls:
        return None
    from aiokafka.helpers import create_ssl_context

    password = settings.kafka_ssl_key_password.get_secret_value() or None
    try:
        ctx = create_ssl_context(cafile=settings.kafka_ssl_cafile or None,
                                 certfile=settings.kafka_ssl_certfile or None,
                                 keyfile=settings.kafka_ssl_keyfile or None, password=password)
    except (ssl.SSLError, OSError) as exc:
        raise KafkaUnavailable(f"KAFKA_SSL_*: cannot load the TLS files: {exc}") from None
    ctx.check_hostname = settings.kafka_ssl_check_hostname
    return ctx if isinstance(ctx, ssl.SSLContext) else None


def options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for an aiokafka producer, consumer or admin client."""
    out: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap,
                           "security_protocol": settings.kafka_security_protocol}
    ctx = ssl_context(settings)
    if ctx is not None:
        out["ssl_context"] = ctx
    if settings.kafka_security_protocol.startswith("SASL_"):
        out.update(sasl_mechanism=settings.kafka_sasl_mechanism,
                   sasl_plain_username=settings.kafka_sasl_username,
                   sasl_plain_password=settings.kafka_sasl_password.get_secret_value())
    return out


def faust_credentials(settings: Settings) -> Any:
    """``broker_credentials`` for ``faust.App`` (None: plaintext)."""
    import faust

    ctx = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL_"):
        creds = faust.SASLCredentials(username=settings.kafka_sasl_username,
                                      password=settings.kafka_sasl_password.get_secret_value(),
                                      ssl_context=ctx, mechanism=settings.kafka_sasl_mechanism)
        return creds
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None


def describe(exc: BaseException) -> str:
    """One line for a connection failure, without credentials."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    if text.startswith(name):
        return text
    return f"{name}: {text}" if text else name


def fatal(exc: BaseException) -> bool:
    """A failure retrying cannot fix: authentication, authorization, TLS verification."""
    from aiokafka.errors import (
        AuthenticationFailedError,
        AuthenticationMethodNotSupported,
        IllegalSaslStateError,
        SaslAuthenticationFailed,
        UnsupportedSaslMechanismError,
    )

    kinds: tuple[type[BaseException], ...] = (AuthenticationFailedError, AuthenticationMethodNotSupported,
                                              IllegalSaslStateError, UnsupportedSaslMechanismError,
                                              SaslAuthenticationFailed, ssl.SSLCertVerificationError)
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kinds) or "authorization failed" in str(seen).lower():
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def wait_for_kafka(settings: Settings, timeout: float | None = None) -> Any:
    """A started aiokafka admin client; the caller closes it. Raises :class:`KafkaUnavailable`
    after ``timeout`` (default ``LOYALTY_CONNECT_TIMEOUT``) or at once on a fatal failure."""
    limit = settings.connect_timeout if timeout is None else timeout
    deadline = time.monotonic() + limit
    where = f"{settings.kafka_bootstrap} ({settings.kafka_security_protocol})"
    quiet = _Quiet()  # aiokafka logs every failed attempt: this check says it once
    logging.getLogger("aiokafka").addFilter(quiet)
    try:
        return await _connect(settings, limit, deadline, where, quiet)
    finally:
        logging.getLogger("aiokafka").removeFilter(quiet)


_REFUSED = ("authentication failed", "invalid credentials", "saslauthenticationfailed",
            "certificate verify failed", "unsupportedsaslmechanism")


class _Quiet(logging.Filter):
    """Keeps aiokafka's per-attempt errors off the console, remembering an authentication or
    TLS refusal: aiokafka logs its cause and raises only "Unable to bootstrap"."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = ""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:
            text = str(record.msg)
        if any(word in text.lower() for word in _REFUSED):
            self.refused = text.strip().splitlines()[0][:300]
        return record.levelno >= logging.CRITICAL


async def _connect(settings: Settings, limit: float, deadline: float, where: str, quiet: _Quiet) -> Any:
    from aiokafka.admin import AIOKafkaAdminClient

    said = False
    while True:
        admin = AIOKafkaAdminClient(**options(settings), request_timeout_ms=max(1000, int(limit * 1000)))
        try:
            await admin.start()
            return admin
        except Exception as exc:
            await admin.close()
            if fatal(exc) or quiet.refused:
                cause = quiet.refused or describe(exc)
                raise KafkaUnavailable(f"Kafka at {where} refused the connection: {cause} "
                                       "(check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD, "
                                       "KAFKA_SASL_MECHANISM and KAFKA_SSL_CAFILE)") from None
            if time.monotonic() > deadline:
                raise KafkaUnavailable(f"Kafka at {where} did not answer within {limit:g} s "
                                       f"(LOYALTY_CONNECT_TIMEOUT): {describe(exc)}") from None
            if not said:
                said = True
                log.warning("waiting for Kafka at %s (up to %g s): %s", where, limit, describe(exc))
            await asyncio.sleep(1.0)
