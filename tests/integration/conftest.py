"""Integration fixtures: a real redis-server (tests/redis_server.py) and the admin API setup."""

from __future__ import annotations

from tests.integration.admin_support import admin, admin_store, pki, snapshot  # noqa: F401
from tests.redis_server import own_redis, redis_server, redis_url  # noqa: F401 - fixtures
