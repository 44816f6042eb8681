"""`flashtx merchant|key|sku|order` against the real engine: an operator creates a
merchant, its admin key manages SKUs and reads orders, and a refusal prints its status,
reason and metadata as JSON (exit 1)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from flashtx.app import LocalEngine
from tests.integration.conftest import unique_merchant_id

pytestmark = pytest.mark.cluster


async def flashtx(*args: str) -> tuple[int, dict]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flashtx", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ})
    out, err = await process.communicate()
    assert out, err.decode()
    return process.returncode or 0, json.loads(out.decode())


async def test_operators_manage_the_engine_from_the_command_line(engine: LocalEngine) -> None:
    merchant_id = unique_merchant_id("cli")
    operator = ("--address", engine.address, "--key", engine.operator_key or "")
    code, created = await flashtx("merchant", "create", merchant_id, "--name", "CLI shop",
                                  *operator)
    assert code == 0 and created["merchant"]["merchantId"] == merchant_id
    admin = ("--address", engine.address, "--key", created["adminKeySecret"])
    code, upserted = await flashtx("sku", "upsert", "tee", "--name", "Tee",
                                   "--price-minor", "1999", "--on-hand", "5", *admin)
    assert code == 0 and upserted["results"][0]["code"] == "RESULT_CODE_OK"
    code, adjusted = await flashtx("sku", "adjust", "tee", "--delta", "3", "--request-id",
                                   "restock-1", *admin)
    code, again = await flashtx("sku", "adjust", "tee", "--delta", "3", "--request-id",
                                "restock-1", *admin)  # a retry: applied once
    code, level = await flashtx("sku", "get", "tee", *admin)
    assert code == 0 and level["level"]["onHand"] == "8"
    code, refused = await flashtx("order", "get", "0001nosuchorder0000", *admin)
    assert code == 1 and refused["status"] == "NOT_FOUND" and refused["reason"] == "NOT_FOUND"
    code, denied = await flashtx("merchant", "create", unique_merchant_id("cli"), "--name",
                                 "x", *admin)  # an admin key is not the operator's
    assert code == 1 and denied["status"] == "PERMISSION_DENIED"


async def test_operators_page_through_every_merchant(engine: LocalEngine) -> None:
    """`flashtx merchant list` (ListMerchants, operator key): every merchant once, in id
    order, over pages; another key or a made-up page token is refused, exit 1."""
    operator = ("--address", engine.address, "--key", engine.operator_key or "")
    made = sorted(unique_merchant_id("listed") for _ in range(3))
    admin_secret = ""
    for merchant_id in made:
        code, created = await flashtx("merchant", "create", merchant_id, "--name", "Listed",
                                      *operator)
        assert code == 0, created
        admin_secret = created["adminKeySecret"]
    seen: list[str] = []
    token = ""
    for _ in range(1000):  # bounded: pages of 2 over every merchant of the session
        code, page = await flashtx("merchant", "list", "--page-size", "2",
                                   *(("--page-token", token) if token else ()), *operator)
        assert code == 0, page
        assert 1 <= len(page["merchants"]) <= 2
        seen += [m["merchantId"] for m in page["merchants"]]
        token = page.get("nextPageToken", "")
        if not token:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen))  # in order, each once
    assert set(made) <= set(seen)
    code, denied = await flashtx("merchant", "list", "--address", engine.address,
                                 "--key", admin_secret)
    assert code == 1 and denied["status"] == "PERMISSION_DENIED"
    code, bad = await flashtx("merchant", "list", "--page-token", "made-up", *operator)
    assert code == 1 and bad["status"] == "INVALID_ARGUMENT", bad


def test_health_answers_for_a_serving_gateway_and_fails_for_none(engine) -> None:
    """`flashtx health` (the image's HEALTHCHECK): exit 0 on a serving gateway, one line
    and exit 1 where nothing answers."""
    served = subprocess.run([sys.executable, "-m", "flashtx.cli", "health", "--address",
                             engine.address], capture_output=True, text=True, timeout=60)
    assert served.returncode == 0 and "SERVING" in served.stdout, served.stdout + served.stderr
    nothing = subprocess.run([sys.executable, "-m", "flashtx.cli", "health", "--address",
                              "127.0.0.1:1", "--timeout", "1"], capture_output=True, text=True,
                             timeout=60)
    assert nothing.returncode == 1 and "Traceback" not in nothing.stderr
    assert "no answer" in nothing.stdout


async def test_skus_are_imported_from_a_csv_file_and_a_bad_file_changes_nothing(
        engine: LocalEngine, tmp_path) -> None:
    operator = ("--address", engine.address, "--key", engine.operator_key or "")
    code, created = await flashtx("merchant", "create", unique_merchant_id("csv"), "--name",
                                  "CSV shop", *operator)
    admin = ("--address", engine.address, "--key", created["adminKeySecret"])
    bad = tmp_path / "bad.csv"
    bad.write_text("sku_id,name,price_minor,on_hand\na,A,100,5\nb,B,cheap,5\n")
    code, refused = await flashtx("sku", "import", str(bad), *admin)
    assert code == 2 and refused["status"] == "INVALID_ARGUMENT" and "line 3" in refused[
        "message"]
    code, level = await flashtx("sku", "get", "a", *admin)
    assert code == 1 and level["status"] == "NOT_FOUND"  # the bad file sent nothing
    rows = "".join(f"s{n},S {n},{100 + n},{n},1\n" for n in range(1200))
    bad.write_text("sku_id,name,price_minor,on_hand,per_buyer_limit\n" + rows
                   + "bad id!,x,1,1,0\n")
    code, refused = await flashtx("sku", "import", str(bad), *admin)
    assert code == 2 and "line 1202" in refused["message"] and "sku_id" in refused["message"]
    good = tmp_path / "good.csv"
    good.write_text("sku_id,name,price_minor,on_hand,per_buyer_limit\n" + rows)
    code, imported = await flashtx("sku", "import", str(good), *admin)
    assert (code, imported["upserted"], imported["refused"]) == (0, 1200, [])  # two chunks
    code, level = await flashtx("sku", "get", "s1199", *admin)
    assert code == 0 and (level["level"]["onHand"], level["level"]["priceMinor"]) == (
        "1199", "1299")
