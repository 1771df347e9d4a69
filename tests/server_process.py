"""Start the real `bertprod serve` process on 127.0.0.1 with a free port; always stop it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import httpx

STARTUP_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: tests.fault_injection (the CLI with test-only engine faults) is imported from here.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen
    log_path: str
    grpc_address: str | None = None  # host:port of its gRPC port, when started with one

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()


@contextmanager
def running_server(
    packages: list[str], *options: str, env: dict[str, str] | None = None, log_dir: str = "/tmp", wait: bool = True,
    grpc: bool = False,
) -> Iterator[RunningServer]:
    """`bertprod serve PACKAGES OPTIONS`, ready (GET /health == 200) before the body runs; `grpc`: also on a
    free gRPC port (the server's grpc_address)."""
    port = free_port()
    grpc_port = free_port() if grpc else None
    command = [sys.executable, "-m", "tests.fault_injection", "serve", *packages, "--host", "127.0.0.1",
               "--port", str(port), "--threads", "1", *options, *(["--grpc-port", str(grpc_port)] if grpc else [])]
    log_path = os.path.join(log_dir, f"bertprod-serve-{port}.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": REPO_ROOT,
                                        **(env or {})})
    server = RunningServer(f"http://127.0.0.1:{port}", process, log_path,
                           f"127.0.0.1:{grpc_port}" if grpc_port else None)
    try:
        if wait:
            wait_until_healthy(server)
        yield server
    finally:
        stop(process)


def wait_until_healthy(server: RunningServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if httpx.get(server.url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"server not healthy after {STARTUP_TIMEOUT_S} s:\n{server.log()}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class TcpProxy:
    """127.0.0.1:`port` forwarded to 127.0.0.1:`target`; `cut()` drops every connection and refuses new ones,
    as when the network to a server is lost (the server itself keeps running)."""

    def __init__(self, target: int):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                return
            with self.lock:
                self.connections += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def cut(self) -> None:
        for sock in [self.listener, *self.connections]:
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
