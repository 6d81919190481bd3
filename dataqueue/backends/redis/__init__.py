"""The Redis backend: :class:`RedisBackend`, its keys, encoding and Lua scripts."""

from dataqueue.backends.redis.backend import RedisBackend

__all__ = ["RedisBackend"]
