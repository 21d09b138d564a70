"""A real Milvus server process for tests: the standalone binary the PyPI package
``milvus`` ships, on a free port, that a test can kill and start again.

The binaries are unpacked once per machine into a cache folder (about 250 MB, tens of
seconds) and linked into each server's own data folder."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from milvus import MilvusServer, __version__, _initialize_data_files

from tests.conftest import free_port


def _binaries() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    base = cache / "neuralops" / f"milvus-{__version__}"
    _initialize_data_files(str(base))  # no-op when already unpacked (md5 checked)
    return base / "bin"


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

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        server = MilvusServer()
        server.show_startup_banner = False
        server.set_base_dir(str(self.root))
        server.listen_port = self.port
        server.start()  # returns when /healthz answers
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
