"""The dependency direction of ARCHITECTURE.md holds, and the contract that enforces it
(``.importlinter``, run by ``lint-imports``) really breaks on a wrong import (issue 9)."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def _packages() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / ".importlinter")
    return cfg["importlinter"]["root_packages"].split()


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT), "--no-cache", str(tree / ".importlinter")], cwd=tree,
                          capture_output=True, text=True, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})


def _copy(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    shutil.copy(ROOT / ".importlinter", tree)
    for pkg in _packages():
        shutil.copytree(ROOT / pkg, tree / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return tree


def test_every_top_level_package_is_in_the_contract() -> None:
    on_disk = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    assert on_disk == set(_packages())


def test_the_tree_keeps_its_layers(tmp_path: Path) -> None:
    done = _lint(_copy(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("protocol/topics.py", "import relay.store", "Each floor uses only the floors below it"),
    ("relay/health.py", "import device.daemon", "Each floor uses only the floors below it"),
    ("relay/health.py", "import cli.main", "Each floor uses only the floors below it"),
    ("device/feedback.py", "import relay.pipeline", "Each floor uses only the floors below it"),
    ("modem/sms.py", "import device.queue", "Each floor uses only the floors below it"),
    ("protocol/topics.py", "import socket", "protocol/ is the pure wire contract"),
    ("device/feedback.py", "import redis", "device/ and modem/ run on the Pi"),
    ("i18n/__init__.py", "import relay.store", "Each floor uses only the floors below it"),
    ("i18n/__init__.py", "import protocol.messages", "Each floor uses only the floors below it"),
    ("i18n/__init__.py", "import babel", "i18n/ reads the catalogs with the standard library"),
])
def test_a_wrong_import_breaks_the_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    tree = _copy(tmp_path)
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}  # a wrong turn\n")
    done = _lint(tree)
    assert done.returncode != 0
    report = " ".join(done.stdout.split())  # contract names wrap over lines
    verdict = re.search(re.escape(contract) + r".*? (KEPT|BROKEN)\b", report)
    assert verdict is not None and verdict.group(1) == "BROKEN", done.stdout
    assert line.split()[1] in report  # the report names the import that broke it
