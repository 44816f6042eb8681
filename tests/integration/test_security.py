"""TLS and mutual TLS with a generated test CA, per-key rate limits, and fuzzing through
the real port: bad bytes and metadata never crash the server, never answer INTERNAL and
never change state."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flashtx.adapters.grpc_errors import SCOPES
from flashtx.app import free_port
from flashtx_client import Client
from flashtx_client.v1 import (
    cart_pb2,
    common_pb2,
    event_pb2,
    event_pb2_grpc,
    merchant_pb2,
    order_pb2,
    stock_pb2,
    stock_pb2_grpc,
)
from tests.integration.conftest import add_skus

pytestmark = pytest.mark.cluster


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name))
            .issuer_name(_name(common_name)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def issue(ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], common_name: str,
          server: bool) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM) signed by `ca`."""
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(common_name))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now)
               .not_valid_after(now + datetime.timedelta(days=1)))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return (key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()),
            cert.public_bytes(serialization.Encoding.PEM))


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


async def serving(address: str, credentials: grpc.ChannelCredentials) -> bool:
    async with grpc.aio.secure_channel(address, credentials) as channel:
        try:
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.aio.AioRpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | bytes]:
    folder = tmp_path_factory.mktemp("pki")
    ca, other_ca = make_ca("flashtx test CA"), make_ca("someone else")
    files: dict[str, Path | bytes] = {"ca": pem(ca[1]), "other_ca": pem(other_ca[1])}
    for name, (issuer, server) in {"server": (ca, True), "client": (ca, False),
                                   "stranger": (other_ca, False)}.items():
        key, cert = issue(issuer, name, server)
        (folder / f"{name}.key").write_bytes(key)
        (folder / f"{name}.crt").write_bytes(cert)
        files[f"{name}_key"], files[f"{name}_crt"] = key, cert
    (folder / "ca.crt").write_bytes(pem(ca[1]))
    files["folder"] = folder
    return files


async def start_gateway(engine, index: int, frozen_clock: bool = False, **changes) -> str:
    """A gateway of its own on a free port (the shared-engine fixture removes it after the
    test). `frozen_clock`: its time stands still, so token buckets never refill."""
    port = free_port()
    gateway = engine.topology.add_gateway(index, engine.config.replace(**changes), port)
    await gateway.ready.remote()
    if frozen_clock:
        await gateway.freeze_clock.remote(None)
    return f"127.0.0.1:{port}"


async def test_tls_and_mutual_tls(engine, pki) -> None:
    folder = pki["folder"]
    tls = await start_gateway(engine, 90, tls_cert_file=str(folder / "server.crt"),
                              tls_key_file=str(folder / "server.key"))
    assert await serving(tls, grpc.ssl_channel_credentials(pki["ca"]))
    assert not await serving(tls, grpc.ssl_channel_credentials(pki["other_ca"]))
    # `flashtx health` (the probes' and the image's check) speaks TLS as the gateway's
    # settings say: the certificate's file in the environment turns it on.
    env = {**os.environ, "FLASHTX_TLS_CERT_FILE": str(folder / "server.crt"),
           "FLASHTX_TLS_KEY_FILE": str(folder / "server.key"),
           "FLASHTX_TLS_CA_FILE": str(folder / "ca.crt")}
    health = [sys.executable, "-m", "flashtx", "health", "--address", tls]
    checked = await asyncio.to_thread(subprocess.run, health, env=env, capture_output=True,
                                      text=True, timeout=60)
    assert checked.returncode == 0 and "SERVING" in checked.stdout, checked
    plain = await asyncio.to_thread(subprocess.run, [*health, "--no-tls"], env=env,
                                    capture_output=True, text=True, timeout=60)
    assert plain.returncode == 1, plain
    mtls = await start_gateway(engine, 91, tls_cert_file=str(folder / "server.crt"),
                               tls_key_file=str(folder / "server.key"),
                               tls_client_ca_file=str(folder / "ca.crt"))
    assert await serving(mtls, grpc.ssl_channel_credentials(
        pki["ca"], private_key=pki["client_key"], certificate_chain=pki["client_crt"]))
    assert not await serving(mtls, grpc.ssl_channel_credentials(pki["ca"]))
    assert not await serving(mtls, grpc.ssl_channel_credentials(
        pki["ca"], private_key=pki["stranger_key"], certificate_chain=pki["stranger_crt"]))


async def test_a_key_over_its_rate_is_refused_with_a_retry_hint(engine, shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="r", name="R", price_minor=1, on_hand=10_000))
    # Its clock stands still: the burst is all there is, however slow the orders are.
    address = await start_gateway(engine, 92, frozen_clock=True, key_orders_per_s=20.0,
                                  key_orders_burst=20.0)
    async with Client(address, shop.token) as limited:
        codes = []
        for n in range(30):
            try:
                if n % 2:  # cart changes cost the key's order rate too
                    await limited.carts.AddItem(cart_pb2.AddItemRequest(
                        buyer_id=f"c{n}", sku_id="r", quantity=1))
                else:
                    await limited.orders.PlaceOrder(order_pb2.PlaceOrderRequest(
                        idempotency_key=f"rate-{n}", buyer_id=f"b{n}",
                        lines=[order_pb2.OrderLine(sku_id="r", quantity=1)]))
                codes.append("OK")
            except grpc.aio.AioRpcError as error:
                codes.append(error.code().name)
                refused = error
    assert codes == ["OK"] * 20 + ["RESOURCE_EXHAUSTED"] * 10
    details = status_pb2.Status.FromString(
        dict(refused.trailing_metadata())["grpc-status-details-bin"]).details
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in details) and retry.retry_delay.ToMilliseconds() > 0


async def test_a_key_over_its_read_rate_is_refused_with_a_retry_hint(engine,
                                                                     shop: Client) -> None:
    await add_skus(shop, stock_pb2.Sku(sku_id="r", name="R", price_minor=1, on_hand=1))
    address = await start_gateway(engine, 93, frozen_clock=True, key_reads_per_s=10.0,
                                  key_reads_burst=10.0)
    async with Client(address, shop.token) as limited:
        codes = []
        for _ in range(20):
            try:
                await limited.stock.GetStock(stock_pb2.GetStockRequest(sku_id="r"))
                codes.append("OK")
            except grpc.aio.AioRpcError as error:
                codes.append(error.code().name)
                refused = error
        # A batch read costs one unit of rate per SKU.
        with pytest.raises(grpc.aio.AioRpcError) as batch:
            await limited.stock.GetStockLevels(stock_pb2.GetStockLevelsRequest(
                sku_ids=["r"] * 50))
    assert codes == ["OK"] * 10 + ["RESOURCE_EXHAUSTED"] * 10
    assert batch.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = status_pb2.Status.FromString(
        dict(refused.trailing_metadata())["grpc-status-details-bin"]).details
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in details) and retry.retry_delay.ToMilliseconds() > 0
    # Orders of the same key are not affected by its reads.
    async with Client(address, shop.token) as limited:
        await limited.orders.PlaceOrder(order_pb2.PlaceOrderRequest(
            idempotency_key="after-reads", buyer_id="b",
            lines=[order_pb2.OrderLine(sku_id="r", quantity=1)]))


async def test_calls_past_the_concurrency_bound_are_refused_by_grpc_itself(
        engine, shop: Client) -> None:
    """Long-lived WatchEvents streams fill a gateway's bound on concurrent calls: the next
    call is refused at once with RESOURCE_EXHAUSTED (not reset, not queued)."""
    saas = await shop.merchants.CreateApiKey(merchant_pb2.CreateApiKeyRequest(
        scopes=[common_pb2.SCOPE_SAAS, common_pb2.SCOPE_CHANNEL], label="watcher"))
    address = await start_gateway(engine, 94, grpc_concurrent_rpcs_max=3)
    metadata = (("authorization", f"Bearer {saas.secret}"),)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = event_pb2_grpc.EventServiceStub(channel)
        streams = [stub.WatchEvents(event_pb2.WatchEventsRequest(), metadata=metadata,
                                    timeout=30) for _ in range(3)]
        for stream in streams:  # the three are being served (blocked reading Redis)
            await stream.initial_metadata()
        stock = stock_pb2_grpc.StockServiceStub(channel)
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stock.GetStock(stock_pb2.GetStockRequest(sku_id="x"), metadata=metadata,
                                 timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.monotonic() - started < 5  # refused, not queued until the timeout
        for stream in streams:
            stream.cancel()
        deadline = time.monotonic() + 60
        while True:  # the cancelled streams leave; then the call is served again
            with pytest.raises(grpc.aio.AioRpcError) as served:
                await stock.GetStock(stock_pb2.GetStockRequest(sku_id="x"),
                                     metadata=metadata, timeout=10)
            if served.value.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                break
            assert time.monotonic() < deadline, "never served again"
            await asyncio.sleep(0.1)
        assert served.value.code() == grpc.StatusCode.NOT_FOUND


ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS,
           grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED,
           grpc.StatusCode.RESOURCE_EXHAUSTED}
UNARY = sorted(m for m in SCOPES if not m.endswith("WatchEvents"))


async def call_raw(address: str, method: str, payload: bytes,
                   metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(method)  # raw bytes in and out
        try:
            await call(payload, metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as error:
            return error.code()
    return grpc.StatusCode.OK


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(method=st.sampled_from(UNARY), payload=st.binary(max_size=300),
       header=st.sampled_from(["authorization", "Authorization", "x-other"]),
       value=st.one_of(st.text(max_size=80), st.just("Bearer ")))
def test_fuzzed_requests_and_metadata_never_fail_internally(
        engine, fuzz_shop, method: str, payload: bytes, header: str, value: str) -> None:
    token, before = fuzz_shop
    safe_value = "".join(c for c in value if 32 <= ord(c) < 127)
    for metadata in ((("authorization", f"Bearer {token}"),),
                     ((header.lower(), safe_value),)):
        code = asyncio.run(call_raw(engine.address, method, payload, metadata))
        assert code in ALLOWED, (method, payload, code)


@pytest.fixture(scope="module")
def fuzz_shop(engine) -> tuple[str, stock_pb2.StockLevel]:
    """A merchant whose state the fuzzing must not change (its admin key is fuzzed)."""
    async def make() -> tuple[str, stock_pb2.StockLevel]:
        from flashtx_client.v1 import merchant_pb2
        from tests.integration.conftest import unique_merchant_id

        async with Client(engine.address, engine.operator_key) as operator:
            created = await operator.merchants.CreateMerchant(
                merchant_pb2.CreateMerchantRequest(merchant_id=unique_merchant_id("fuzz")))
        async with Client(engine.address, created.admin_key_secret) as shop:
            await add_skus(shop, stock_pb2.Sku(sku_id="f", name="F", price_minor=1,
                                               on_hand=5))
            level = (await shop.stock.GetStock(stock_pb2.GetStockRequest(
                sku_id="f", consistency=common_pb2.READ_CONSISTENCY_STRONG))).level
        return created.admin_key_secret, level

    return asyncio.run(make())


async def test_garbage_on_the_socket_leaves_the_server_serving(engine, fuzz_shop) -> None:
    host, port = engine.address.split(":")
    for garbage in (b"\x00" * 64, b"GET / HTTP/1.1\r\n\r\n", bytes(range(256)) * 4,
                    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 100):
        with socket.create_connection((host, int(port)), timeout=5) as raw:
            raw.sendall(garbage)
    assert await serving_insecure(engine.address)
    token, before = fuzz_shop
    async with Client(engine.address, token) as shop:  # and the fuzzing changed nothing
        after = (await shop.stock.GetStock(stock_pb2.GetStockRequest(
            sku_id="f", consistency=common_pb2.READ_CONSISTENCY_STRONG))).level
    assert (after.on_hand, after.reserved, after.sold) == (before.on_hand, before.reserved,
                                                            before.sold)


async def serving_insecure(address: str) -> bool:
    async with grpc.aio.insecure_channel(address) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5)
    return response.status == health_pb2.HealthCheckResponse.SERVING
