"""Traces' exporters as configured: "console" writes each span as one JSON line on
stdout, "otlp" is set up for a collector, "none" adds nothing. Each in a process of its
own (a process sets its tracing up once)."""

from __future__ import annotations

import json
import subprocess
import sys

_SCRIPT = """
import sys
from flashtx.actors import tracing
from flashtx.engine.config import load_config
config = load_config(environ={}, postgres_dsn="none", trace_exporter=sys.argv[1],
                     trace_endpoint="http://127.0.0.1:9")
tracing.configure(config, "test")
print("ENABLED", tracing.enabled(), flush=True)
if sys.argv[1] == "console":
    with tracing.span("outer", shard=1):
        carried = tracing.carrier()
    with tracing.span("inner", parent=carried, links=[None]):
        pass
    tracing.provider().shutdown()
"""


def run(exporter: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", _SCRIPT, exporter], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_console_spans_are_json_lines_and_carry_their_parent() -> None:
    lines = run("console")
    assert lines[0] == "ENABLED True"
    spans = {span["name"]: span for span in map(json.loads, lines[1:])}
    outer, inner = spans["outer"], spans["inner"]
    assert outer["attributes"] == {"shard": 1}
    assert inner["parent_id"] == outer["context"]["span_id"]
    assert inner["context"]["trace_id"] == outer["context"]["trace_id"]


def test_otlp_is_set_up_and_none_adds_nothing() -> None:
    assert run("otlp") == ["ENABLED True"]
    assert run("none") == ["ENABLED False"]
