"""The ``neuralops`` console script.

The script is installed with every install, but the server commands need the
``server`` extra. On the light app-side install (``pip install neuralops``) this says
so in one line instead of ending in a traceback. Imports only the standard library.
"""

from __future__ import annotations

import importlib.util
import sys

# One importable module per dependency the server commands cannot start without.
SERVER_MODULES = (
    "grpc_health",
    "grpc_reflection",
    "psycopg",
    "psycopg_pool",
    "httpx",
    "numpy",
    "scipy",
    "pymilvus",
    "openai",
    "prometheus_client",
    "starlette",
    "uvicorn",
)

HINT = 'install the server extra: pip install "neuralops[server]"'


def missing_server_modules() -> list[str]:
    return [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]


def main() -> int:
    missing = missing_server_modules()
    if missing:
        print(
            f"neuralops: the server commands need {', '.join(missing)}, not installed; {HINT}",
            file=sys.stderr,
        )
        return 2
    from neuralops.servers.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
