"""Settings: one PostgreSQL database, read from ``DATAQUEUE_DATABASE_URL``.

dataqueue uses the same database (``dataqueue.contrib.django.queue_from_settings`` reads
``DATABASES["default"]``), so a job enqueued with ``db=django.db.connection`` inside
``transaction.atomic()`` commits or rolls back with the model rows.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured


def database_from_url(url: str) -> dict[str, Any]:
    """A ``DATABASES`` entry for a ``postgresql://user:password@host:port/name?opt=v`` URL."""
    parts = urlsplit(url)
    if parts.scheme.split("+")[0] not in ("postgres", "postgresql"):
        raise ImproperlyConfigured(f"DATAQUEUE_DATABASE_URL must be a postgresql:// URL: {url!r}")
    options = dict(parse_qsl(parts.query))  # sslmode=..., or host=/socket/dir
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(parts.path.lstrip("/")),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or options.pop("host", ""),
        "PORT": str(parts.port or options.pop("port", "")),
        "OPTIONS": options,
    }


_database_url = os.environ.get("DATAQUEUE_DATABASE_URL", "").strip()
if not _database_url:
    raise ImproperlyConfigured(
        "set DATAQUEUE_DATABASE_URL=postgresql://user:password@host:5432/dbname"
    )

DATABASES = {"default": database_from_url(_database_url)}

#: The worker command's handlers (``python manage.py dataqueue_worker``).
DATAQUEUE_HANDLERS = "signups.jobs:HANDLERS"

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = os.environ.get(
    "DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver"
).split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "signups",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
