"""The faust wiring: rankflow's extension points are the ones in use."""

from __future__ import annotations

from streams.app import create_app
from streams.settings import Settings
from streams.transport import BatchConductor, BatchConsumer


def test_the_app_uses_the_batch_transport():
    app = create_app(Settings()).app
    assert isinstance(app.topics, BatchConductor)
    assert app.transport.Consumer is BatchConsumer
