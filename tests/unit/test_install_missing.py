"""scripts/install-missing asks apt only for the packages of the tools that are missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-missing"
TOOLS = [
    "promtool=prometheus",
    "prometheus=prometheus",
    "docker-compose=docker-compose",
    "redis-server=redis-server",
    "npm=nodejs,npm",
]

# A stand-in apt-get: it records each call, fails an install until `update` has run when told
# to (a fresh machine's empty lists), and "installs" a package by putting its tools on the PATH.
FAKE_APT = """#!/bin/bash
echo "$*" >> "$LOG"
if [ "$1" = update ]; then touch "$BIN/.updated"; exit 0; fi
if [ -n "${NEED_UPDATE:-}" ] && [ ! -e "$BIN/.updated" ]; then exit 100; fi
for name in "$@"; do
  case "$name" in
    prometheus) touch "$BIN/promtool" "$BIN/prometheus" ;;
    nodejs) touch "$BIN/node" ;;
    -*|install) continue ;;
    *) touch "$BIN/$name" ;;
  esac
done
chmod +x "$BIN"/*
"""


def _run(tmp_path: Path, present: list[str], **env: str) -> tuple[int, list[str]]:
    """Runs the script on a PATH holding only `present` (and what a shell needs); apt's calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for real in ("bash", "env", "id", "touch", "chmod"):
        found = shutil.which(real)
        assert found is not None
        (bin_dir / real).symlink_to(found)
    (bin_dir / "apt-get").write_text(FAKE_APT)
    # Not root, the script goes through sudo; this one just runs the command.
    (bin_dir / "sudo").write_text('#!/bin/bash\nexec "$@"\n')
    for tool in present:
        (bin_dir / tool).write_text("#!/bin/bash\n")
    for path in bin_dir.iterdir():
        path.chmod(0o755)
    log = tmp_path / "apt.log"
    done = subprocess.run(
        [str(SCRIPT), *TOOLS],
        env={"PATH": str(bin_dir), "BIN": str(bin_dir), "LOG": str(log), **env},
        capture_output=True,
        text=True,
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return done.returncode, calls


def test_keeps_a_node_that_has_its_own_npm(tmp_path: Path) -> None:
    code, calls = _run(tmp_path, ["node", "npm"])
    assert code == 0
    assert calls == [
        "install -y --no-install-recommends prometheus docker-compose redis-server",
    ]


def test_installs_node_and_npm_only_where_npm_is_missing(tmp_path: Path) -> None:
    code, calls = _run(tmp_path, ["promtool", "prometheus", "docker-compose", "redis-server"])
    assert code == 0
    assert calls == ["install -y --no-install-recommends nodejs npm"]


def test_refreshes_empty_lists_once_and_retries(tmp_path: Path) -> None:
    code, calls = _run(tmp_path, ["node", "npm", "promtool", "prometheus"], NEED_UPDATE="1")
    assert code == 0
    install = "install -y --no-install-recommends docker-compose redis-server"
    assert calls == [install, "update", install]


def test_asks_nothing_when_every_tool_is_there(tmp_path: Path) -> None:
    present = ["promtool", "prometheus", "docker-compose", "redis-server", "npm"]
    code, calls = _run(tmp_path, present)
    assert code == 0
    assert calls == []
