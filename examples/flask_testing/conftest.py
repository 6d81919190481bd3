"""Fixtures for the signup app's tests, on top of dataqueue's pytest plugin.

The plugin (installed with dataqueue) gives each test a database of its own, copied from
a template migrated once per session; ``dataqueue_prepare_database`` adds the app's
tables to that template, so every test starts with them, empty.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from signup_app import create_app, metadata


@pytest.fixture(scope="session")
def dataqueue_prepare_database() -> Callable[[sa.Engine], None]:
    """Create the app's tables in the template database, once per session."""
    return metadata.create_all


@pytest.fixture
def app(dataqueue_database_url: str) -> Iterator[Flask]:
    """The app, configured with this test's database."""
    flask_app = create_app({"DATABASE_URL": dataqueue_database_url, "TESTING": True})
    yield flask_app
    flask_app.extensions["dataqueue"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def outbox() -> list[tuple[str, str]]:
    """The emails "sent" by the handlers: ``(to, subject)``."""
    return []
