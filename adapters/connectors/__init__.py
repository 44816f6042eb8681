"""Connectors: each one delivers a merchant's events to one outside system (a webhook,
a warehouse export), from its own Redis consumer group, in its own actor. A connector
that fails retries with backoff, then dead-letters; nothing else notices.

To write one: subclass ``Sink`` with ``deliver(events)`` that raises on failure, and
register its kind in ``SINKS``.
"""

from flashtx.adapters.connectors.runner import ConnectorRunner, ConnectorSpec, load_specs
from flashtx.adapters.connectors.sinks import SINKS, ExportSink, Sink, WebhookSink, sign, verify

__all__ = ["SINKS", "ConnectorRunner", "ConnectorSpec", "ExportSink", "Sink", "WebhookSink",
           "load_specs", "sign", "verify"]
