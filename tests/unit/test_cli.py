"""Commands given bad input answer with one line and a non-zero exit, never a traceback
or a long wait: an address where no cluster runs, a mistyped setting, a reshard that
could not add shards, an unknown connector's address."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from flashtx.app import free_port


def flashtx(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flashtx", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})


@pytest.mark.parametrize("args", [
    ("status",), ("status", "--json"), ("replay-dead-letters", "webhook"),
])
def test_commands_on_an_address_with_no_cluster_say_so(args: tuple[str, ...]) -> None:
    nothing = f"127.0.0.1:{free_port()}"  # free now: nothing listens there
    done = flashtx(*args, "--address", nothing)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"no running flashtx cluster at {nothing}" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr


def test_a_mistyped_setting_or_a_bad_count_is_one_line() -> None:
    typo = flashtx("reshard", "--stock-shards", "3", FLASHTX_BATCH_ITEM_MAX="3")
    assert typo.returncode == 2 and "did you mean" in typo.stderr.replace("\n", " ")
    assert "Traceback" not in typo.stdout + typo.stderr
    few = flashtx("reshard", "--stock-shards", "1")
    assert few.returncode == 1 and "at least 2" in few.stderr
    nowhere = flashtx("reshard", "--stock-shards", "2", "--dsn",
                      f"postgresql://nobody@127.0.0.1:{free_port()}/none", "--timeout", "1")
    assert nowhere.returncode == 1 and "cannot reach the database" in nowhere.stderr
    assert "Traceback" not in nowhere.stdout + nowhere.stderr


def test_a_generated_operator_key_never_goes_to_output_that_is_not_a_terminal(
        tmp_path, capsys) -> None:
    from flashtx.cli import show_operator_key

    key = "ftx1.operator.abcd.secret-value"
    path = show_operator_key(key, str(tmp_path), terminal=False)
    assert path is not None and path.read_text().strip() == key
    assert path.stat().st_mode & 0o777 == 0o600
    out = capsys.readouterr().out
    assert "secret-value" not in out and str(path) in out.replace("\n", "")
    assert show_operator_key(key, str(tmp_path), terminal=True) is None
    assert "secret-value" in capsys.readouterr().out
