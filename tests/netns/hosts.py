"""Hosts on their own network addresses, on one machine: Linux network namespaces joined
by veth links to a bridge, which a scenario can cut, slow down or make lossy.

    with Hosts.up(dsn) as hosts:        # as root (ip netns, tc, iptables)
        hosts.cut("a"); ...; hosts.heal("a")

The layout (10.77.0.0/24 on the bridge; the machine itself is .1):

    head   .2  the Ray head (GCS) and the `flashtx serve` driver; no engine actor
    a      .3  a Ray worker offering the `flashtx` resource: shards and one gateway
    b      .4  the same
    client .5  the load generator; reaches the gateways at .3:50051 and .4:50051

Postgres and Redis stay where they run (127.0.0.1); a proxy on the bridge address
(.1:15432, .1:16379) makes them reachable from every host, so "Postgres unreachable from
one host" is a packet filter in that host alone. Everything is torn down on exit, also
when the body raises: every process in a host's namespace is killed, the namespaces, the
links and the bridge removed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
SUBNET = "10.77.0"
ADDRESSES = {"head": 2, "a": 3, "b": 4, "client": 5}
WORKERS = ("a", "b")
RAY_PORT, GRPC_PORT, PG_PORT, REDIS_PORT = 6380, 50051, 15432, 16379
TOOLS = ("ip", "tc", "iptables", "socat")


def missing_tools() -> list[str]:
    """What this machine lacks to build hosts (root and the tools)."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root")
    return missing


def _run(*command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=check)


@dataclass
class Hosts:
    dsn: str  # the engine's database, as the machine reaches it (127.0.0.1)
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    logs: Path = field(default_factory=lambda: Path("/tmp"))
    _proxies: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _serve: subprocess.Popen[bytes] | None = None
    operator_key: str = field(
        default_factory=lambda: f"ftx1.operator.netns.{secrets.token_urlsafe(24)}")

    # --- names ---------------------------------------------------------------------------

    def ns(self, host: str) -> str:
        return f"fx{self.tag}{host[0]}"

    def ip(self, host: str) -> str:
        return f"{SUBNET}.{ADDRESSES[host]}"

    def _veth(self, host: str) -> str:
        return f"fxv{self.tag}{host[0]}"

    @property
    def bridge(self) -> str:
        return f"fxb{self.tag}"

    @property
    def gateways(self) -> list[str]:
        return [f"{self.ip(host)}:{GRPC_PORT}" for host in WORKERS]

    @property
    def engine_dsn(self) -> str:
        """The engine's database as the hosts reach it (through the bridge proxy)."""
        rest = self.dsn.split("@", 1)[1]
        database = rest.split("/", 1)[1]
        user = self.dsn.split("://", 1)[1].split("@", 1)[0]
        return f"postgresql://{user}@{SUBNET}.1:{PG_PORT}/{database}"

    # --- life ----------------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def up(cls, dsn: str, logs: Path | None = None, **engine: Any) -> Iterator[Hosts]:
        hosts = cls(dsn, logs=logs or Path("/tmp"))
        try:
            hosts._network()
            hosts._ray()
            hosts._engine(engine)
            yield hosts
        finally:
            hosts.down()

    def _network(self) -> None:
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{SUBNET}.1/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for host in ADDRESSES:
            ns, veth = self.ns(host), self._veth(host)
            _run("ip", "netns", "add", ns)
            _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _run("ip", "link", "set", veth, "master", self.bridge, "up")
            self.exec(host, "ip", "addr", "add", f"{self.ip(host)}/24", "dev", "eth0")
            self.exec(host, "ip", "link", "set", "eth0", "up")
            self.exec(host, "ip", "link", "set", "lo", "up")
            self.exec(host, "ip", "route", "add", "default", "via", f"{SUBNET}.1")
        redis_port = 6379
        for listen, target in ((PG_PORT, self.dsn.split("@", 1)[1].split("/", 1)[0]),
                               (REDIS_PORT, f"127.0.0.1:{redis_port}")):
            host, _, port = target.partition(":")
            self._proxies.append(subprocess.Popen(  # its own group: its forks end with it
                ["socat", f"TCP-LISTEN:{listen},bind={SUBNET}.1,fork,reuseaddr",
                 f"TCP:{host}:{port or 5432}"], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True))

    def _ray(self) -> None:
        ray = str(Path(sys.executable).parent / "ray")
        temp = f"/tmp/ray-{self.ns('head')}"
        self._start_ray("head", ray, "start", "--head", f"--node-ip-address={self.ip('head')}",
                        f"--port={RAY_PORT}", "--num-cpus=0", "--include-dashboard=false",
                        "--disable-usage-stats", f"--temp-dir={temp}")
        for host in WORKERS:
            self._start_ray(host, ray, "start", f"--address={self.ip('head')}:{RAY_PORT}",
                            f"--node-ip-address={self.ip(host)}", "--num-cpus=1",
                            '--resources={"flashtx": 100}')

    def _start_ray(self, host: str, *command: str) -> None:
        # Output to a file, not a pipe: Ray's daemons keep a pipe open after `ray start`.
        log = self.logs / f"ray-{self.tag}-{host}.log"
        with log.open("wb") as out:
            done = subprocess.run(["ip", "netns", "exec", self.ns(host), *command], cwd=REPO,
                                  env=self.env(), stdout=out, stderr=subprocess.STDOUT)
        if done.returncode:
            raise RuntimeError(f"ray start failed on {host}: {log.read_text()[-2000:]}")

    def _engine(self, engine: dict[str, Any]) -> None:
        env = {**self.env(), "FLASHTX_POSTGRES_DSN": self.engine_dsn,
               "FLASHTX_REDIS_URL": f"redis://{SUBNET}.1:{REDIS_PORT}/0",
               "FLASHTX_OPERATOR_KEY": self.operator_key,
               "FLASHTX_ACTOR_RESOURCE": "flashtx", "FLASHTX_GATEWAYS": "2",
               "FLASHTX_GATEWAY_CPUS": "1",
               **{f"FLASHTX_{name.upper()}": str(value) for name, value in engine.items()}}
        log = (self.logs / f"serve-{self.tag}.log").open("wb")
        self._serve = subprocess.Popen(
            ["ip", "netns", "exec", self.ns("head"), sys.executable, "-m", "flashtx.cli",
             "serve", "--address", f"{self.ip('head')}:{RAY_PORT}", "--port", str(GRPC_PORT)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while not all(self.serving(address) for address in self.gateways):
            if self._serve.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the engine did not start on the hosts; see "
                                   f"{self.logs / f'serve-{self.tag}.log'}")
            time.sleep(1)

    def env(self) -> dict[str, str]:
        return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
                "PYTHONPATH": str(REPO)}

    def down(self) -> None:
        """Everything back as it was (also after a failure half-way up)."""
        for _ in range(20):  # Ray's daemons may start a process while others are killed
            if not sum(self.kill(host) for host in ADDRESSES):
                break
            time.sleep(0.2)
        for proxy in self._proxies:  # the listener and the forks serving connections
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proxy.pid, 9)
            proxy.wait()
        for host in ADDRESSES:
            _run("ip", "link", "del", self._veth(host), check=False)
            _run("ip", "netns", "del", self.ns(host), check=False)
        _run("ip", "link", "del", self.bridge, check=False)
        shutil.rmtree(f"/tmp/ray-{self.ns('head')}", ignore_errors=True)

    # --- acting on hosts -----------------------------------------------------------------

    def exec(self, host: str, *command: str, env: dict[str, str] | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", self.ns(host), *command], cwd=REPO,
                              env=env, capture_output=True, text=True, check=check)

    def spawn(self, host: str, *command: str, log: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["ip", "netns", "exec", self.ns(host), *command], cwd=REPO,
                                env=self.env(), stdout=log.open("wb"),
                                stderr=subprocess.STDOUT)

    def kill(self, host: str) -> int:
        """Kills every process of a host (its namespace): a host lost outright."""
        pids = _run("ip", "netns", "pids", self.ns(host), check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), 9)
        return len(pids)

    def cut(self, host: str) -> None:
        """The host's link goes down: nothing in or out."""
        _run("ip", "link", "set", self._veth(host), "down")

    def heal(self, host: str) -> None:
        _run("ip", "link", "set", self._veth(host), "up")

    def netem(self, host: str, delay_ms: int, loss_percent: float) -> str:
        """Delay and loss on the host's link, both ways, with tc netem; where the kernel
        has no netem qdisc (containers often lack sch_netem), the loss alone, with
        iptables' statistic match. Answers what was applied."""
        spec = ("delay", f"{delay_ms}ms", "loss", f"{loss_percent}%")
        tried = _run("tc", "qdisc", "replace", "dev", self._veth(host), "root", "netem",
                     *spec, check=False)
        if tried.returncode == 0:
            self.exec(host, "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", *spec)
            return f"tc netem: {delay_ms} ms delay and {loss_percent} % loss each way"
        for chain in ("INPUT", "OUTPUT"):
            self.exec(host, "iptables", "-A", chain, "-i" if chain == "INPUT" else "-o",
                      "eth0", "-m", "statistic", "--mode", "random", "--probability",
                      str(loss_percent / 100), "-j", "DROP")
        return (f"{loss_percent} % loss each way (iptables); no delay: this kernel has no"
                " netem qdisc")

    def block(self, host: str, port: int) -> None:
        """The host can no longer reach the machine's `port` (Postgres: PG_PORT)."""
        self.exec(host, "iptables", "-A", "OUTPUT", "-d", f"{SUBNET}.1", "-p", "tcp",
                  "--dport", str(port), "-j", "REJECT", "--reject-with", "tcp-reset")

    def unblock(self, host: str, port: int) -> None:
        self.exec(host, "iptables", "-D", "OUTPUT", "-d", f"{SUBNET}.1", "-p", "tcp",
                  "--dport", str(port), "-j", "REJECT", "--reject-with", "tcp-reset")

    def blackhole(self, host: str, port: int) -> None:
        """Packets between the host and the machine's `port` are dropped, both ways: no
        refusal, no reset (a link that silently loses everything)."""
        for rule in self._blackhole_rules(port):
            self.exec(host, "iptables", "-A", *rule)

    def restore(self, host: str, port: int) -> None:
        for rule in self._blackhole_rules(port):
            self.exec(host, "iptables", "-D", *rule)

    @staticmethod
    def _blackhole_rules(port: int) -> list[list[str]]:
        return [["OUTPUT", "-d", f"{SUBNET}.1", "-p", "tcp", "--dport", str(port), "-j",
                 "DROP"],
                ["INPUT", "-s", f"{SUBNET}.1", "-p", "tcp", "--sport", str(port), "-j",
                 "DROP"]]

    def serving(self, address: str) -> bool:
        """The gateway at `address` answers SERVING (asked from the machine)."""
        try:
            with grpc.insecure_channel(address) as channel:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=2)
            return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)
        except grpc.RpcError:
            return False
