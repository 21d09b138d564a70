"""The README's layout table and the folders say the same thing."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_ROW = re.compile(r"^\| `([^`]+/)` \| (.*) \|$")
_NAME = re.compile(r"`([a-z_]+)`")


def _table() -> dict[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("### Layout", 1)[1].split("\n## ", 1)[0]
    return {m.group(1): m.group(2) for m in map(_ROW.match, section.splitlines()) if m}


def _modules_named(cell: str) -> set[str]:
    """The modules a row lists: its backticked names outside parentheses (inside them
    are explanations: a table, a command, an RPC)."""
    return set(_NAME.findall(re.sub(r"\([^)]*\)", "", cell)))


def _packages() -> list[Path]:
    return [ROOT / "clients", *sorted(p.parent for p in (ROOT / "servers").glob("*/__init__.py"))]


def test_every_package_has_a_row_naming_exactly_its_modules() -> None:
    rows = _table()
    for package in _packages():
        folder = f"{package.relative_to(ROOT)}/"
        assert folder in rows, f"README layout has no row for {folder}"
        modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
        assert _modules_named(rows[folder]) == modules, folder


def test_every_folder_the_table_names_exists_and_every_top_folder_is_named() -> None:
    rows = _table()
    assert all((ROOT / folder).is_dir() for folder in rows), rows.keys()
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.splitlines()
    top = {f"{path.split('/')[0]}/" for path in tracked if "/" in path}
    named_tops = {f"{folder.split('/')[0]}/" for folder in rows}
    assert top == named_tops
