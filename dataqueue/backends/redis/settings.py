"""Connection setup of the Redis backend: a redis-py client from the user's options.

``redis_url`` is used as given; ``redis_config`` takes ``url`` (then ``db`` and ``tls``
are applied on top of it) or ``host`` (default ``127.0.0.1``), ``port`` (6379),
``password``, ``db`` (0) and ``tls``; and ``key_prefix``, which wins over
``init_job_queue``'s ``key_prefix`` (default ``dq:``). ``tls`` is ``True`` or a mapping
with ``ca``, ``cert``, ``key`` (``file://`` paths; ``ca`` may also be PEM text) and
``reject_unauthorized`` (default True).

redis-py is an optional dependency (the ``dataqueue[redis]`` extra); without it every
Redis option raises :class:`ConfigurationError` saying how to install it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dataqueue.errors import ConfigurationError

#: Keys accepted in ``redis_config``.
CONFIG_KEYS = frozenset({"url", "host", "port", "password", "db", "tls", "key_prefix"})
_TLS_KEYS = frozenset({"ca", "cert", "key", "reject_unauthorized"})


def require_redis() -> Any:
    """The ``redis`` module, or :class:`ConfigurationError` naming the extra to install."""
    try:
        import redis
    except ImportError:
        raise ConfigurationError(
            'The Redis backend requires the "redis" package. Install it with: '
            'pip install "dataqueue[redis]"'
        ) from None
    return redis


def key_prefix(redis_config: Mapping[str, Any] | None, default: str) -> str:
    """The key prefix: ``redis_config["key_prefix"]`` if given, else ``default``."""
    prefix = (redis_config or {}).get("key_prefix", default)
    if not isinstance(prefix, str):
        raise ConfigurationError(f"key_prefix must be a string, got {prefix!r}")
    return prefix


def _file_path(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.startswith("file://"):
        raise ConfigurationError(
            f"redis_config.tls.{what} must be a file:// path (redis-py reads it from a file), "
            f"got {value!r}"
        )
    return value[len("file://") :]


def _tls_options(tls: Any) -> dict[str, Any]:
    if tls is None or tls is False:
        return {}
    if tls is True:
        return {"ssl": True}
    if not isinstance(tls, Mapping):
        raise ConfigurationError(f"redis_config.tls must be True or a mapping, got {tls!r}")
    unknown = set(tls) - _TLS_KEYS
    if unknown:
        raise ConfigurationError(
            f"unknown redis_config.tls key(s) {sorted(unknown)!r}; expected {sorted(_TLS_KEYS)}"
        )
    options: dict[str, Any] = {"ssl": True}
    ca = tls.get("ca")
    if isinstance(ca, str) and ca.startswith("file://"):
        options["ssl_ca_certs"] = ca[len("file://") :]
    elif ca is not None:
        options["ssl_ca_data"] = ca
    if tls.get("cert") is not None:
        options["ssl_certfile"] = _file_path(tls["cert"], "cert")
    if tls.get("key") is not None:
        options["ssl_keyfile"] = _file_path(tls["key"], "key")
    if tls.get("reject_unauthorized", True) is False:
        options["ssl_cert_reqs"] = "none"
        options["ssl_check_hostname"] = False
    return options


def create_client(redis_url: str | None, redis_config: Mapping[str, Any] | None) -> Any:
    """A new ``redis.Redis`` for ``redis_url`` or ``redis_config`` (connects lazily)."""
    redis = require_redis()
    config = dict(redis_config or {})
    unknown = set(config) - CONFIG_KEYS
    if unknown:
        raise ConfigurationError(
            f"unknown redis_config key(s): {sorted(unknown)!r}; expected {sorted(CONFIG_KEYS)}"
        )
    if redis_url is not None and config.get("url") is not None:
        raise ConfigurationError("pass the Redis URL as redis_url or redis_config['url'], not both")
    url = redis_url if redis_url is not None else config.get("url")
    options = _tls_options(config.get("tls"))
    if config.get("db") is not None:
        options["db"] = config["db"]
    if url is not None:
        if not isinstance(url, str):
            raise ConfigurationError(f"the Redis URL must be a string, got {url!r}")
        if options.pop("ssl", False) and url.startswith("redis://"):
            url = "rediss://" + url[len("redis://") :]
        try:
            return redis.Redis.from_url(url, **options)
        except ValueError as exc:
            raise ConfigurationError(f"invalid Redis URL {url!r}: {exc}") from None
    return redis.Redis(
        host=config.get("host", "127.0.0.1"),
        port=config.get("port", 6379),
        password=config.get("password"),
        **options,
    )
