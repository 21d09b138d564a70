"""A real Milvus server process for tests: the standalone binary the PyPI package
``milvus`` ships, on a free port, that a test can kill and start again.

The binaries are unpacked once per machine into a cache folder (about 250 MB, tens of
seconds) and linked into each server's own data folder."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

from milvus import MilvusServer, MilvusServerConfig, __version__, _initialize_data_files

from tests.conftest import free_port

_PARTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")


def _binaries() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    base = cache / "neuralops" / f"milvus-{__version__}"
    _initialize_data_files(str(base))  # no-op when already unpacked (md5 checked)
    return base / "bin"


class _Config(MilvusServerConfig):  # type: ignore[misc]
    """Probes ports as Milvus binds them (SO_REUSEADDR), so a restart right after
    SIGKILL gets the same ports back despite connections in TIME_WAIT."""

    def try_bind_port(self, port: int) -> socket.socket | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            sock.close()
            return None
        return sock


class MilvusProcess:
    """``start()`` / ``kill()`` / ``start()`` again on the same port and data."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        bin_dir = root / "bin"
        if not bin_dir.exists():
            bin_dir.symlink_to(_binaries(), target_is_directory=True)
        self._server: MilvusServer | None = None
        self._ports: dict[str, int] = {}  # every component's port, kept across restarts

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        server = MilvusServer(_Config())
        server.show_startup_banner = False
        # Every component on loopback (by default Milvus registers the machine's
        # first address), and a short session lease so a restart after SIGKILL
        # takes over the dead process' sessions in seconds, not half a minute.
        for part in _PARTS:
            server.config.extra_configs[f"{part}.ip"] = "127.0.0.1"
        server.config.extra_configs["common.session.ttl"] = 5
        server.set_base_dir(str(self.root))
        server.listen_port = self.port
        for key, port in self._ports.items():  # a restart: the same ports as before
            server.config.configs[key] = port
        server.start()  # returns when /healthz answers
        items = server.config.configurable_items
        self._ports = {k: int(v[1]) for k, v in items.items() if k.endswith("_port")}
        self._server = server

    def kill(self) -> None:
        """SIGKILL, as a crash would: no clean shutdown."""
        if self._server is not None and self._server.server_proc is not None:
            self._server.server_proc.send_signal(signal.SIGKILL)
            self._server.server_proc.wait(10)
            self._server.server_proc = None
            self._server.stop()
            self._server = None

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
