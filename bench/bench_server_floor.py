"""How fast can a Python HTTP server answer a burst of webhook notifications at all?

The reference for ``bench_actions``' webhook figures: the same ``ab`` burst (200
notifications, keep-alive, 20 and 200 senders) against two servers that do nothing but read
the body, parse its JSON and answer a small JSON body — no authentication, no decision, no
audit line:

- ``threads``: the standard library's ``ThreadingHTTPServer`` (a thread per connection), the
  model the exporter's server is built on;
- ``asyncio``: one event loop reading and writing every connection, a minimal HTTP/1.1
  parser, the work handed to 8 worker threads (as a handler that may block would need);
- ``uvicorn``: uvicorn with httptools, the same 8-thread executor (only if uvicorn is
  installed: it is not a dependency; ``pip install uvicorn httptools`` to compare). It never
  keeps an HTTP/1.0 connection alive, and ``ab -k`` speaks HTTP/1.0, so each of its
  requests opens a connection;
- ``transport``: the exporter's own transport (``exporter.transport``: asyncio, httptools,
  8 worker threads, timeouts and the connection cap) with the same trivial handler.

Each runs in its own process on 127.0.0.1; ``BENCH_FLOOR_REPEAT`` (3) bursts per setting.
After the bursts, each server's threads and resident memory are read from /proc.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.promstack import free_port
from tests.support import wait_for

NOTIFICATIONS = 200
REPEAT = int(os.environ.get("BENCH_FLOOR_REPEAT", "3"))
SENDERS = (20, 200)
BODY = json.dumps({"version": "4", "status": "firing", "receiver": "wa", "groupKey": "g",
                   "alerts": [{"status": "firing", "labels": {
                       "alertname": "WhatsAppMessagesTableLarge", "action": "gc"}}]})

THREADS_SERVER = """
import json, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self):
        json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        data = b'{"status":"ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "keep-alive")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

server = type("S", (ThreadingHTTPServer,), {"daemon_threads": True, "request_queue_size": 256})
server(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""

ASYNCIO_SERVER = """
import asyncio, json, sys
from concurrent.futures import ThreadPoolExecutor

POOL = ThreadPoolExecutor(8)

def work(body):
    json.loads(body)
    return b'{"status":"ok"}'

class Connection(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.buffer = transport, b""

    def data_received(self, data):
        self.buffer += data
        while (end := self.buffer.find(b"\\r\\n\\r\\n")) >= 0:
            lines = self.buffer[:end].decode("latin-1").split("\\r\\n")[1:]
            headers = {k.strip().lower(): v.strip()
                       for k, _, v in (line.partition(":") for line in lines)}
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            future = asyncio.get_running_loop().run_in_executor(POOL, work, body)
            future.add_done_callback(self.answer)

    def answer(self, future):
        data = future.result()
        self.transport.write(b"HTTP/1.1 200 OK\\r\\nContent-Type: application/json\\r\\n"
                             b"Connection: keep-alive\\r\\nContent-Length: %d\\r\\n\\r\\n%s"
                             % (len(data), data))

async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Connection, "127.0.0.1", int(sys.argv[1]), backlog=256)
    await server.serve_forever()

asyncio.run(main())
"""

UVICORN_SERVER = """
import asyncio, json, sys
from concurrent.futures import ThreadPoolExecutor
import uvicorn

POOL = ThreadPoolExecutor(8)

def work(body):
    json.loads(body)
    return b'{"status":"ok"}'

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    data = await asyncio.get_running_loop().run_in_executor(POOL, work, body)
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), http="httptools", loop="asyncio",
            log_level="warning", access_log=False, backlog=256)
"""

TRANSPORT_SERVER = """
import json, socket, sys, threading
from exporter.transport import HttpServer, Limits, Response

class Handler:
    max_body_bytes = 1 << 20
    per_client = {}

    def check(self, request):
        return None

    def lane(self, request):
        return "hook"

    def handle(self, request):
        json.loads(request.body)
        return Response(200, b'{"status":"ok"}', "application/json")

    def decorate(self, request, response):
        pass

sock = socket.socket()
sock.bind(("127.0.0.1", int(sys.argv[1])))
HttpServer(sock, Handler(), None, Limits(), "bench").start()
threading.Event().wait()
"""


def _listening(port: int, proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise SystemExit(f"server exited with {proc.returncode}")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def ab(url: str, senders: int, requests_total: int, payload: Path | None = None,
       headers: tuple[str, ...] = ()) -> dict[str, float]:
    """``ab -k`` (keep-alive, as Prometheus and Alertmanager): p50/p99 in ms (fractional, from
    ab's percentile file), requests per second and non-2xx answers."""
    with tempfile.NamedTemporaryFile(suffix=".csv") as percentiles:
        command = ["ab", "-q", "-k", "-n", str(requests_total), "-c", str(senders),
                   "-e", percentiles.name]
        if payload is not None:
            command += ["-p", str(payload), "-T", "application/json"]
        for header in headers:
            command += ["-H", header]
        out = subprocess.run([*command, url], capture_output=True, text=True, check=False,
                             timeout=120)
        if out.returncode != 0:
            raise SystemExit(f"ab failed: {out.stderr.strip()}")
        percent = dict(line.split(",") for line in Path(percentiles.name).read_text()
                       .splitlines()[1:])
    rate = re.search(r"Requests per second:\s+([\d.]+)", out.stdout)
    assert rate is not None, out.stdout
    non_2xx = re.search(r"Non-2xx responses:\s+(\d+)", out.stdout)
    return {"p50_ms": float(percent["50"]), "p99_ms": float(percent["99"]),
            "per_second": float(rate.group(1)),
            "non_2xx": float(non_2xx.group(1)) if non_2xx else 0.0}


def burst(port: int, senders: int, payload: Path) -> dict[str, float]:
    return ab(f"http://127.0.0.1:{port}/", senders, NOTIFICATIONS, payload)


def process_status(pid: int) -> dict[str, float]:
    """Threads and resident memory of a running process."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines())
    return {"threads": float(fields["Threads"]),
            "rss_mb": int(fields["VmRSS"].split()[0]) / 1024}


def start_floor(code: str = THREADS_SERVER) -> tuple[subprocess.Popen[bytes], int]:
    """One of the trivial servers above, listening on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", code, str(port)],
                            cwd=Path(__file__).resolve().parent.parent)
    wait_for(lambda: _listening(port, proc), what="the server to listen")
    return proc, port


def measure(code: str, payload: Path) -> dict[str, object]:
    proc, port = start_floor(code)
    try:
        bursts: dict[str, object] = {str(senders): [burst(port, senders, payload)
                                                    for _ in range(REPEAT)]
                                     for senders in SENDERS}
        return {**bursts, "process": process_status(proc.pid)}
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    if shutil.which("ab") is None:
        print("  ab (apache2-utils) is missing: skipped", flush=True)
        return
    with tempfile.TemporaryDirectory() as tmp:
        payload = Path(tmp) / "notification.json"
        payload.write_text(BODY)
        servers = [("threads", THREADS_SERVER), ("asyncio", ASYNCIO_SERVER),
                   ("transport", TRANSPORT_SERVER)]
        if importlib.util.find_spec("uvicorn") is not None:
            servers.insert(2, ("uvicorn", UVICORN_SERVER))
        report = {name: measure(code, payload) for name, code in servers}
    floor = {senders: statistics.median(r["p99_ms"] for r in report["threads"][str(senders)])
             for senders in SENDERS}
    for name, by_senders in report.items():
        process = by_senders["process"]
        for senders in SENDERS:
            runs = by_senders[str(senders)]
            p99 = [r["p99_ms"] for r in runs]
            rate = statistics.median(r["per_second"] for r in runs)
            print(f"  {name}: {senders} senders, {NOTIFICATIONS} notifications: p99 "
                  f"{min(p99):.0f}-{max(p99):.0f} ms (median {statistics.median(p99):.0f} = "
                  f"{statistics.median(p99) / max(floor[senders], 1):.2f}x the threads floor), "
                  f"median {rate:.0f}/s; then {process['threads']:.0f} threads, "
                  f"{process['rss_mb']:.1f} MiB RSS", flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
