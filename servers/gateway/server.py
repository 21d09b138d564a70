"""Runs the gateway app under uvicorn on a background thread of the serving process."""

from __future__ import annotations

import logging
import socket
import threading

import uvicorn
from neuralops.servers.gateway.app import Gateway, build_app

log = logging.getLogger(__name__)


class HttpPortUnavailable(OSError):
    def __init__(self, host: str, port: int, why: str) -> None:
        super().__init__(
            f"the HTTP gateway cannot listen on {host}:{port} ({why}): "
            "set NEURALOPS_HTTP_PORT to a free port, or 0 to turn it off"
        )


class HttpServer:
    """uvicorn serving the gateway. The socket is bound in :meth:`start`, so a taken
    port fails there, and port 0 picks a free one (see :attr:`port`)."""

    def __init__(self, gateway: Gateway, host: str, port: int) -> None:
        self._gateway = gateway
        self._host = host
        self._want = port
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout_s: float = 10.0) -> HttpServer:
        sock = socket.socket(socket.AF_INET6 if ":" in self._host else socket.AF_INET)
        try:
            sock.bind((self._host, self._want))
        except OSError as exc:
            sock.close()
            raise HttpPortUnavailable(self._host, self._want, exc.strerror or str(exc)) from exc
        sock.listen(128)
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            build_app(self._gateway),
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="http-gateway", daemon=True
        )
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout_s / 0.02)):
            if server.started or not self._thread.is_alive():
                break
            deadline.wait(0.02)
        if not server.started:
            raise RuntimeError("the HTTP gateway did not start")
        log.info("HTTP/JSON gateway and console on http://%s:%d/", self._host, self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._server = None
        self._thread = None
