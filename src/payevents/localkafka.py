"""Apache Kafka on this machine: the pinned release (``tools/kafka/pom.xml``) in KRaft mode.

One node (combined broker + controller) for ``payevents kafka up``, the demo, the benchmarks and the test
session; three nodes (each broker + controller, one quorum) for the fault tests. The jars come from Maven
Central through ``tools/kafka/fetch.sh`` into a cache outside the work tree (``PAYEVENTS_KAFKA_LIBS`` names
a ready folder of jars instead). Every node runs in its own process with its own data directory, so a node
can be killed (SIGKILL), stopped, and started again on its own data.

The JVM compiles with C1 only (:data:`DEFAULT_JVM_OPTIONS`): on the two cores that the broker shares with the
services it serves, C2's compiler threads took 0.2–0.6 s of CPU in every 20,000-event drain of the benchmarks,
even after three drains had warmed it, and the broker's request handlers ran no slower without them
(``docs/benchmarks.md``, "2026-12-04, late"). ``PAYEVENTS_KAFKA_JVM_OPTS`` replaces these options (empty: the
JVM's defaults, both compilers).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final

from payevents.errors import ConfigError

#: group-join timings for a local broker, which accepts short sessions (``group.min.session.timeout.ms`` below):
#: a member joins, and a dead one is noticed, in seconds. A production cluster keeps the client defaults.
FAST_JOIN_CONFIG: dict[str, str] = {
    "session.timeout.ms": "3000",
    "heartbeat.interval.ms": "500",
}
#: the tests' client settings for a local broker: fast joins, and a fetch answered within 10 ms when there is
#: nothing to read (a test waits on its consumer). The benchmarks fetch as a deployment does
#: (:func:`bench_kafka_config`).
FAST_GROUP_CONFIG: dict[str, str] = {**FAST_JOIN_CONFIG, "fetch.wait.max.ms": "10"}


def bench_kafka_config() -> dict[str, str]:
    """The benchmarks' client settings for their local broker: fast joins only, so every fetch setting is the
    deployed default (``transport.kafka.CONSUMER_DEFAULTS``). With the tests' 10 ms fetch wait, consumers that
    keep up with the writer asked the broker for records ~10 times as often when it had none, and the broker's
    CPU per payment of the end-to-end run was 0.92–1.06 ms against 0.66–0.68 with the default 100 ms
    (``payevents bench end-to-end --transport kafka --n 10000``, 2026-12-03)."""
    return dict(FAST_JOIN_CONFIG)

_FETCH = Path(__file__).resolve().parents[2] / "tools" / "kafka" / "fetch.sh"

_LOG4J = """\
status = error
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


#: the environment variable whose value (split as a shell would) replaces :data:`DEFAULT_JVM_OPTIONS`
JVM_OPTIONS_ENV: Final = "PAYEVENTS_KAFKA_JVM_OPTS"
#: the local nodes' JVM options beyond heap and collector: C1 only (tiered compilation stops at level 1)
DEFAULT_JVM_OPTIONS: Final = ("-XX:TieredStopAtLevel=1",)


def jvm_options() -> list[str]:
    """The JVM options of a node started now: ``PAYEVENTS_KAFKA_JVM_OPTS`` where it is set, else
    :data:`DEFAULT_JVM_OPTIONS`."""
    raw = os.environ.get(JVM_OPTIONS_ENV)
    if raw is None:
        return list(DEFAULT_JVM_OPTIONS)
    try:
        return shlex.split(raw)
    except ValueError as exc:
        raise ConfigError(f"{JVM_OPTIONS_ENV}: cannot be split into options ({exc})") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kafka_libs() -> Path:
    """The folder of the pinned Apache Kafka's jars, fetched (once) where it is not cached yet."""
    ready = os.environ.get("PAYEVENTS_KAFKA_LIBS")
    if ready:
        path = Path(ready)
        if not any(path.glob("kafka_2.13-*.jar")):
            raise ConfigError(f"kafka: PAYEVENTS_KAFKA_LIBS={ready} holds no kafka_2.13 jar")
        return path
    if not _FETCH.exists():
        raise ConfigError("kafka: set PAYEVENTS_KAFKA_LIBS to a folder of Apache Kafka jars "
                          "(tools/kafka/fetch.sh of a payevents checkout fetches them)")
    if shutil.which("java") is None:
        raise ConfigError("kafka: java is not installed (Apache Kafka 4 needs Java 17 or newer)")
    proc = subprocess.run(["bash", str(_FETCH)], capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        raise ConfigError(lines[-1] if lines else f"kafka: {_FETCH} failed with exit {proc.returncode}")
    return Path(proc.stdout.strip().splitlines()[-1])


def new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


class KafkaNode:
    """One Kafka process (broker + controller) with its ports and its own data directory."""

    def __init__(self, node_id: int, data_dir: Path, port: int, controller_port: int) -> None:
        self.node_id = node_id
        self.data_dir = data_dir
        self.port = port
        self.controller_port = controller_port
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def write_config(self, voters: str, props: Mapping[str, str]) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        base = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir / "log"),
        }
        conf = self.data_dir / "server.properties"
        conf.write_text("".join(f"{k}={v}\n" for k, v in {**base, **props}.items()))
        (self.data_dir / "log4j2.properties").write_text(_LOG4J.format(log=self.log_file))
        return conf

    def java(self, libs: Path, main: str, *args: str, heap: str = "512m") -> list[str]:
        return ["java", f"-Xmx{heap}", "-Xms128m", "-XX:+UseG1GC", *jvm_options(), "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
                "-cp", f"{libs}/*", main, *args]

    def format(self, libs: Path, cluster_id: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.java(libs, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c",
                      str(self.data_dir / "server.properties"), "--ignore-formatted", heap="256m"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def start(self, libs: Path) -> None:
        if self.alive:
            return
        self.proc = subprocess.Popen(
            self.java(libs, "kafka.Kafka", str(self.data_dir / "server.properties")),
            stdout=subprocess.DEVNULL, stderr=(self.data_dir / "stderr.log").open("ab"), start_new_session=True)
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: the process ends at once, as on a power cut; its data directory stays."""
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a controlled shutdown), SIGKILL after ``timeout``."""
        if not self.alive:
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def listening(self) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
            return True
        return False

    def tail(self, lines: int = 30) -> str:
        out: list[str] = []
        for f in (self.data_dir / "stderr.log", self.log_file):
            with contextlib.suppress(OSError):
                out += f.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(out[-lines:])


class LocalKafka:
    """A local Apache Kafka of ``nodes`` combined broker+controller processes on free loopback ports.

    ``data_dir`` keeps the nodes' logs and metadata (a temporary folder, removed on :meth:`stop`, when not
    given). With three nodes the defaults of new topics are replication factor 3 and
    ``min.insync.replicas=2``: the set-up that loses one broker without losing an acknowledged record.
    """

    def __init__(self, nodes: int = 1, *, data_dir: Path | None = None, port: int | None = None,
                 props: Mapping[str, str] | None = None) -> None:
        if nodes < 1:
            raise ValueError("nodes must be >= 1")
        self._own_dir = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="payevents-kafka-")) if data_dir is None else data_dir
        self.libs: Path | None = None
        rf = min(3, nodes)
        isr = 2 if nodes >= 3 else 1
        self.props: dict[str, str] = {
            "offsets.topic.replication.factor": str(rf),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(rf),
            "transaction.state.log.min.isr": str(isr),
            "share.coordinator.state.topic.replication.factor": str(rf),
            "share.coordinator.state.topic.min.isr": str(isr),
            "default.replication.factor": str(rf),
            "min.insync.replicas": str(isr),
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "1000",
            "group.consumer.min.session.timeout.ms": "1000",
            "group.consumer.session.timeout.ms": "6000",
            "group.consumer.min.heartbeat.interval.ms": "500",
            "group.consumer.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "4000",
            "broker.heartbeat.interval.ms": "500",
            "controller.quorum.election.timeout.ms": "1000",
            "controller.quorum.fetch.timeout.ms": "2000",
            "replica.lag.time.max.ms": "5000",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "log.flush.scheduler.interval.ms": "1000",
            **(props or {}),
        }
        state = self.data_dir / "cluster.json"
        if state.exists():  # an existing local cluster: its ports and id, so it restarts on its own data
            import json

            saved = json.loads(state.read_text())
            self.cluster_id = str(saved["cluster_id"])
            ports = [(int(p), int(c)) for p, c in saved["ports"]]
            if len(ports) != nodes:
                raise ConfigError(f"kafka: {self.data_dir} holds a {len(ports)}-node cluster, not {nodes}")
        else:
            self.cluster_id = new_cluster_id()
            ports = [(port if (port and i == 0) else free_port(), free_port()) for i in range(nodes)]
        self.nodes = [KafkaNode(i + 1, self.data_dir / f"node{i + 1}", p, c) for i, (p, c) in enumerate(ports)]
        self.voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes)

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    @property
    def port(self) -> int:
        return self.nodes[0].port

    def start(self, timeout: float = 90.0) -> LocalKafka:
        import json

        self.libs = kafka_libs()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "cluster.json").write_text(json.dumps(
            {"cluster_id": self.cluster_id, "ports": [[n.port, n.controller_port] for n in self.nodes]}))
        for n in self.nodes:
            n.write_config(self.voters, self.props)
        formats = [(n, n.format(self.libs, self.cluster_id)) for n in self.nodes
                   if not (n.data_dir / "log" / "meta.properties").exists()]
        for n, proc in formats:
            _, err = proc.communicate(timeout=120)
            if proc.returncode != 0:
                raise ConfigError(f"kafka: formatting node {n.node_id} failed: "
                                  f"{err.decode(errors='replace').strip().splitlines()[-1:]}")
        try:  # whatever ends the start (also SIGTERM, as SystemExit: faces.cli.main) stops what it started
            for n in self.nodes:
                n.start(self.libs)
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(self, index: int, timeout: float = 90.0) -> None:
        """Start one node again on its own data (after :meth:`KafkaNode.kill` or ``stop``)."""
        assert self.libs is not None, "start() the cluster first"
        self.nodes[index].start(self.libs)
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until every running node listens, the cluster's metadata lists every running broker and a consumer
        group's coordinator answers (a fresh cluster creates its offsets topic on the first group's request; until
        it has loaded it, a consumer's join waits)."""
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout
        running = [n for n in self.nodes if n.alive]
        while time.monotonic() < deadline:
            for n in self.nodes:
                if n.proc is not None and n.proc.poll() is not None and n in running:
                    raise RuntimeError(f"kafka node {n.node_id} exited with {n.proc.returncode}:\n{n.tail()}")
            if all(n.listening() for n in running):
                with contextlib.suppress(Exception):
                    admin = AdminClient({"bootstrap.servers": ",".join(n.bootstrap for n in running)})
                    md = admin.list_topics(timeout=2)
                    if {b for b in md.brokers} >= {n.node_id for n in running}:
                        admin.describe_consumer_groups(["payevents.ready"], request_timeout=2)[
                            "payevents.ready"].result()  # raises until the group coordinator answers
                        return
            time.sleep(0.2)
        tails = "\n".join(f"--- node {n.node_id}\n{n.tail(15)}" for n in running)
        raise RuntimeError(f"kafka did not become ready within {timeout:.0f}s\n{tails}")

    def stop(self, *, keep_data: bool | None = None) -> None:
        for n in self.nodes:  # SIGTERM all first: a controlled shutdown needs the quorum of the others
            if n.alive:
                assert n.proc is not None
                n.proc.send_signal(signal.SIGTERM)
        for n in self.nodes:
            n.stop(timeout=20)
        if (self._own_dir if keep_data is None else not keep_data):
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def fresh_channel(bootstrap: str, timeout: float = 30.0) -> None:
    """Delete ``payments.{env}.events`` and its dead-letter channel, of every env, where they exist, and wait
    until the broker has forgotten them (the next producer or consumer runtime creates them anew)."""
    from confluent_kafka.admin import AdminClient

    from payevents.contracts.channel import Env, dead_letter_topic_for, topic_for

    names = {f(env) for env in Env for f in (topic_for, dead_letter_topic_for)}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    present = names & set(admin.list_topics(timeout=10).topics)
    if not present:
        return
    for fut in admin.delete_topics(sorted(present), operation_timeout=timeout).values():
        with contextlib.suppress(Exception):
            fut.result()
    deadline = time.monotonic() + timeout
    while names & set(admin.list_topics(timeout=10).topics):
        if time.monotonic() > deadline:
            raise RuntimeError(f"kafka: topics {sorted(present)} still listed {timeout:.0f}s after deletion")
        time.sleep(0.05)


@contextlib.contextmanager
def running_kafka(nodes: int = 1, **kwargs: object) -> Iterator[LocalKafka]:
    with LocalKafka(nodes, **kwargs) as kafka:  # type: ignore[arg-type]
        yield kafka
