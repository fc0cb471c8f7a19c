"""The fixture every OpenTelemetry test takes: providers of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.otel.support import Recorder


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.shutdown()
