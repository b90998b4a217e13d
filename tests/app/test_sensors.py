"""The lean Faust monitor: cheap counters, exported at scrape time."""

from __future__ import annotations

from faust.types import TP
from prometheus_client import CollectorRegistry, generate_latest

from app.stream.sensors import LeanMonitor, _Collector


def test_counts_messages_by_topic_and_exports_them() -> None:
    monitor = LeanMonitor()
    registry = CollectorRegistry()
    registry.register(_Collector(monitor))
    tp = TP("pos.receipts", 0)
    for offset in range(3):
        monitor.on_message_in(tp, offset, None)
        assert monitor.on_stream_event_in(tp, offset, None, None) is None
    monitor.on_message_out(tp, 0, None)
    monitor.on_send_initiated(None, "loyalty.segment-changes", None, 1, 1)
    assert tp in monitor.stream_inbound_time  # Faust's slow-processing check reads it
    text = generate_latest(registry).decode()
    assert 'loyalty_messages_received_total{topic="pos.receipts"} 3.0' in text
    assert 'loyalty_messages_sent_total{topic="loyalty.segment-changes"} 1.0' in text
    assert "loyalty_active_messages 2.0" in text
