"""Shared fixtures: a fixed clock and settings built from a dict."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.fakes.memory import FakeClock

FIXED_NOW = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(FIXED_NOW)
