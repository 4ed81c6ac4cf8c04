"""A region's broker edge: the mutual-TLS front the other regions' replicators read its broker through.

tansu 0.6.0 serves plain TCP only (its ``--cert``/``--key`` build a TLS acceptor that is never
used, and ``--authentication`` is SASL), so the embedded stack puts this in front of each broker:
it accepts only clients whose certificate the stack's CA signed (``STATE/pki``, stack/pki.py),
forwards each Kafka frame to the broker in the same region over loopback, and rewrites the answers
that name brokers (stack/kafka_wire.py) so a client that came in through the edge stays on it.
Processes inside the region keep talking to their broker directly; everything that crosses
regions goes through an edge (``Settings.kafka_link``). A real deployment uses its brokers' own
TLS listeners instead (docs/security.md).

    python -m stack.edge --region east      (started by ``stack up``, one per region)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import ssl
import struct
import sys
from contextlib import suppress

from regionsync.settings import Settings
from stack import kafka_wire, procs

log = logging.getLogger(__name__)

# Kafka's own limit on a request (socket.request.max.bytes) is 100 MB; a larger length prefix is
# not Kafka talking.
MAX_FRAME = 128 * 1024 * 1024
CLIENT = "mirror"  # the client certificate the replicators present (STATE/pki/mirror.pem)


def proc_name(region: str) -> str:
    return f"edge-{region}"


def address(settings: Settings, region: str) -> tuple[str, int]:
    host, port = settings.kafka_links[region].rsplit(":", 1)
    return host, int(port)


def is_up(settings: Settings, region: str) -> bool:
    return procs.port_open(*address(settings, region))


def server_context(settings: Settings) -> ssl.SSLContext:
    """TLS 1.2 or later, the services' certificate (valid for localhost and 127.0.0.1), and a
    client certificate signed by the stack's CA required."""
    from serve.tls import tls_files

    files = tls_files(settings)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(files.ca))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(files.cert), str(files.key))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def _frames(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(4)
    (size,) = struct.unpack(">i", head)
    if not 0 <= size <= MAX_FRAME:
        raise kafka_wire.WireError(f"a frame of {size} bytes")
    return await reader.readexactly(size)


class Edge:
    """Forwards every connection to ``upstream``, naming ``public`` as the broker's address."""

    def __init__(self, upstream: tuple[str, int], public: tuple[str, int]) -> None:
        self.upstream, self.public = upstream, public

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        peer = client_w.get_extra_info("peercert") or {}
        who = dict(x[0] for x in peer.get("subject", ())).get("commonName", "?")
        try:
            broker_r, broker_w = await asyncio.open_connection(*self.upstream)
        except OSError as exc:  # the broker is down: the client retries, as with a broker restart
            log.warning("edge: broker %s:%s does not answer (%s); closing %s's connection", *self.upstream, exc, who)
            client_w.close()
            return
        asked: dict[int, kafka_wire.RequestHead] = {}
        tasks = [asyncio.create_task(self._requests(client_r, broker_w, asked)),
                 asyncio.create_task(self._responses(broker_r, client_w, asked))]
        try:
            _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in tasks:
                with suppress(asyncio.CancelledError, asyncio.IncompleteReadError, ConnectionError,
                              kafka_wire.WireError, ssl.SSLError):
                    await task
        finally:
            for w in (broker_w, client_w):
                w.close()

    async def _requests(self, client_r: asyncio.StreamReader, broker_w: asyncio.StreamWriter,
                        asked: dict[int, kafka_wire.RequestHead]) -> None:
        while True:
            frame = await _frames(client_r)
            head = kafka_wire.request_head(frame)
            if head.api_key in kafka_wire.REWRITTEN:
                asked[head.correlation_id] = head
            broker_w.write(struct.pack(">i", len(frame)) + frame)
            await broker_w.drain()

    async def _responses(self, broker_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                         asked: dict[int, kafka_wire.RequestHead]) -> None:
        while True:
            frame = await _frames(broker_r)
            head = asked.pop(kafka_wire.correlation_id(frame), None)
            if head is not None:
                frame = kafka_wire.rewrite_response(head, frame, *self.public)
            client_w.write(struct.pack(">i", len(frame)) + frame)
            await client_w.drain()


async def serve(settings: Settings, region: str) -> None:
    host, port = address(settings, region)
    bhost, bport = settings.kafka_bootstraps[region].rsplit(":", 1)
    edge = Edge((bhost, int(bport)), (host, port))
    server = await asyncio.start_server(edge.handle, host, port, ssl=server_context(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("edge of region %s: TLS on %s:%s -> broker %s:%s", region, host, port, bhost, bport)
    async with server:
        await stop.wait()


def start(settings: Settings, region: str) -> procs.Proc:
    """Start the region's edge (making the CA and the certificates first if they are missing)."""
    from stack import pki

    pki.ensure(settings, clients=(CLIENT,))
    host, port = address(settings, region)
    proc = procs.spawn(settings.state_dir, proc_name(region), [sys.executable, "-m", "stack.edge", "--region", region],
                       env=settings.child_env())
    procs.wait_until(lambda: procs.port_open(host, port), 20, f"broker edge of region {region}", proc)
    return proc


def stop(settings: Settings, region: str) -> bool:
    return procs.stop(settings.state_dir, proc_name(region))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.edge", description=__doc__.splitlines()[0])
    parser.add_argument("--region", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    asyncio.run(serve(settings, args.region))
    return 0


if __name__ == "__main__":
    sys.exit(main())
