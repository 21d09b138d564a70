"""CI check: the plain ``pip install neuralops`` is the light app-side install.

Run with the repo's .venv (which has the server extra)::

    .venv/bin/python scripts/check_light_install.py build/wheel/neuralops-*.whl

1. Makes a fresh venv and installs the wheel into it, dependencies from the index.
2. Fails if ``pip list`` there shows any dependency of the ``server`` extra.
3. Imports every client module there (the hook too), and checks the ``neuralops``
   command says, in one line, that the server extra is missing.
4. Starts RunHistory and the Registry from this (full) environment, installs LangGraph into
   the fresh venv as the user's app would have it, runs the README's hook snippet there,
   and waits until the Registry lists the run the hook sent.
"""

from __future__ import annotations

import email
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import grpc
from neuralops.registry.v1 import registry_pb2, registry_pb2_grpc
from neuralops.servers.tooling.processes import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
# Server-extra packages that the light install may still hold because a client dependency
# needs them itself: langchain-core -> langsmith -> httpx, orjson.
ALSO_NEEDED_BY_CLIENT_DEPS = {"httpx", "orjson"}
# Names the server extra brings in under another distribution name.
EXTRA_SERVER_DISTS = {"psycopg-binary"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def server_only_dists(wheel: Path) -> set[str]:
    """The distributions the ``server`` extra adds, from the wheel's own metadata."""
    with zipfile.ZipFile(wheel) as zf:
        meta_name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(zf.read(meta_name))
    names = set()
    for req in meta.get_all("Requires-Dist") or []:
        if re.search(r"""extra\s*==\s*["']server["']""", req):
            names.add(_norm(re.split(r"[\s\[<>=!~;(]", req, maxsplit=1)[0]))
    if not names:
        raise SystemExit("check: the wheel declares no `server` extra")
    return (names | EXTRA_SERVER_DISTS) - ALSO_NEEDED_BY_CLIENT_DEPS


def readme_hook_snippet() -> str:
    """The README's Python block that attaches RunHistoryCallback."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    found = [b for b in blocks if "RunHistoryCallback(" in b]
    if not found:
        raise SystemExit("check: README.md has no hook snippet (RunHistoryCallback)")
    return str(found[0])


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, text=True, capture_output=True, check=False, **kw)  # type: ignore[call-overload, no-any-return]


def must(proc: subprocess.CompletedProcess[str], what: str) -> str:
    if proc.returncode != 0:
        raise SystemExit(f"check: {what} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def registry_runs(address: str, workflow_id: str) -> list[str]:
    stub = registry_pb2_grpc.RegistryServiceStub(grpc.insecure_channel(address))
    try:
        reply = stub.ListWorkflowRuns(
            registry_pb2.ListWorkflowRunsRequest(workflow_id=workflow_id), timeout=5
        )
    except grpc.RpcError:
        return []
    return [r.run_id for r in reply.runs]


def main(argv: list[str]) -> int:
    wheels = [Path(a) for a in argv] or sorted((ROOT / "build" / "wheel").glob("neuralops-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"check: want one wheel, got {wheels}")
    wheel = wheels[0].resolve()
    work = Path(tempfile.mkdtemp(prefix="neuralops-light-"))
    try:
        venv = work / "venv"
        must(run([sys.executable, "-m", "venv", str(venv)]), "venv")
        py, pip = str(venv / "bin" / "python"), [str(venv / "bin" / "python"), "-m", "pip"]
        quiet = ["--quiet", "--disable-pip-version-check"]
        must(run([*pip, "install", *quiet, str(wheel)]), "pip install neuralops")

        listed = json.loads(
            must(run([*pip, "list", "--format=json", "--disable-pip-version-check"]), "pip list")
        )
        have = {_norm(p["name"]) for p in listed}
        leaked = sorted(have & server_only_dists(wheel))
        if leaked:
            raise SystemExit(f"check: `pip install neuralops` brought server deps: {leaked}")
        print(f"light install: {len(have)} distributions, no server dependency")

        cli = run([str(venv / "bin" / "neuralops"), "serve"])
        lines = cli.stderr.strip().splitlines()
        if cli.returncode == 0 or len(lines) != 1 or "neuralops[server]" not in lines[0]:
            raise SystemExit(f"check: `neuralops` without the server extra said:\n{cli.stderr}")
        print(f"neuralops command: {lines[0]}")

        # Every client module imports with the plain install alone (the example graph is
        # the one that needs the app's LangGraph).
        imports = (
            "import importlib, pkgutil, neuralops.clients as c\n"
            "names = [m.name for m in pkgutil.iter_modules(c.__path__) if m.name != 'example']\n"
            "[importlib.import_module('neuralops.clients.' + n) for n in names]\n"
            "print(len(names))"
        )
        count = must(run([py, "-c", imports], cwd=work), "importing the clients").strip()
        print(f"light install: all {count} client modules import (example needs langgraph)")

        # The user's app brings its own LangGraph; the hook itself needs only langchain-core.
        must(run([*pip, "install", *quiet, "langgraph>=1.0,<2"]), "pip install langgraph")
        server = ServerProcess(work / "server", services="runhistory,registry").start()
        try:
            app_dir = work / "app"
            app_dir.mkdir()
            env = {
                "PATH": str(venv / "bin"),
                "NEURALOPS_RUNHISTORY_ADDR": server.address("runhistory"),
                "NEURALOPS_DATA_DIR": str(app_dir / ".neuralops"),
            }
            snippet = readme_hook_snippet()
            where = "import neuralops.clients as c; print(c.__file__)\n"
            out = must(run([py, "-c", where + snippet], cwd=app_dir, env=env), "hook snippet")
            if not out.startswith(str(venv)):
                raise SystemExit(f"check: the snippet imported neuralops from {out.splitlines()}")
            deadline = time.monotonic() + 60
            while not (runs := registry_runs(server.address("registry"), "support")):
                if time.monotonic() > deadline:
                    raise SystemExit("check: the hook's run never reached RunHistory/Registry")
                time.sleep(0.2)
            print(f"README hook snippet: run {runs[0]} stored and listed by the Registry")
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
