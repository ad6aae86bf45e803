"""The gateway's image: built from the project's Dockerfile, unchanged, by a real container
engine (Debian's podman with runc), and run against the vLLM stand-in.

There is no registry here, so the Dockerfile's base image is stood in for by a Debian root file
system made with mmdebstrap from Debian's packages, carrying this machine's CA bundle so pip can
reach PyPI inside the build, and tagged with the base's name (`../shared/CONTAINERS.md`). Where
no container engine can run the test skips and says why; `make test-image` sets
`TTC_REQUIRE_ENGINE=1`, which turns that skip into a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.processes import answers_200, poll
from bench.vllm_standin.answers import SERVED_MODEL
from bench.vllm_standin.inprocess import run_standin
from tests.factories import free_port

pytestmark = pytest.mark.image

ROOT = Path(__file__).resolve().parents[2]
BASE = "docker.io/library/python:3.11-slim"
IMAGE = "localhost/ttc-server:test"
CONTAINER = "ttc-server-image-test"


def _base_name() -> str:
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if line.startswith("FROM "):
            return line.split()[1]
    raise AssertionError("the Dockerfile names no base image")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """podman with runc, with the ulimits podman sets by default switched off (they fail in
    this kind of container: 'error setting rlimit type 7')."""
    missing = [tool for tool in ("podman", "runc", "mmdebstrap") if shutil.which(tool) is None]
    reason = f"no container engine: {', '.join(missing)} not installed" if missing else None
    conf = tmp_path_factory.mktemp("containers") / "containers.conf"
    conf.write_text("[containers]\ndefault_ulimits = []\n")
    os.environ["CONTAINERS_CONF"] = str(conf)
    command = ["podman", "--runtime", "runc"]
    if reason is None:
        info = subprocess.run([*command, "info"], capture_output=True, text=True)
        if info.returncode != 0:
            reason = f"podman cannot run here: {info.stderr.strip()[-300:]}"
    if reason is not None:
        if os.environ.get("TTC_REQUIRE_ENGINE") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    yield command


def run(command: list[str], timeout: float = 900) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def image(engine: list[str], tmp_path_factory: pytest.TempPathFactory) -> str:
    # Docker Hub's short names are short for docker.io/library/.
    assert f"docker.io/library/{_base_name()}" == BASE, "the stand-in carries the base's name"
    exists = subprocess.run([*engine, "image", "exists", BASE], capture_output=True)
    if exists.returncode != 0:
        # The base image stood in for: Debian with Python and pip, as the official image has.
        base = tmp_path_factory.mktemp("base") / "base.tar"
        run(
            [
                "mmdebstrap",
                "--variant=minbase",
                "--include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates",
                '--customize-hook=rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
                "--customize-hook=cp /etc/ssl/certs/ca-certificates.crt "
                '"$1"/etc/ssl/certs/ca-certificates.crt',
                "bookworm",
                str(base),
            ]
        )
        run([*engine, "import", str(base), BASE])
    # The project's Dockerfile, unchanged; the build's network is the host's, for PyPI.
    run([*engine, "build", "--network", "host", "-t", IMAGE, str(ROOT)])
    return IMAGE


def wait_ready(url: str, engine: list[str], timeout_s: float = 120) -> None:
    if poll(lambda: answers_200(f"{url}/ready"), timeout_s):
        return
    logs = subprocess.run([*engine, "logs", CONTAINER], capture_output=True, text=True)
    raise AssertionError(f"the container never became ready:\n{logs.stderr[-3000:]}")


def test_the_image_serves_as_a_non_root_user(engine: list[str], image: str) -> None:
    port = free_port()
    with run_standin() as standin:
        subprocess.run([*engine, "rm", "-f", CONTAINER], capture_output=True)
        run(
            [
                *engine,
                "run",
                "-d",
                "--name",
                CONTAINER,
                "--network",
                "host",
                "-e",
                f"TTC_PORT={port}",
                "-e",
                f"TTC_VLLM_URL={standin.url}",
                image,
            ]
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_ready(url, engine)
            assert httpx.get(f"{url}/health", timeout=5).status_code == 200
            response = httpx.post(
                f"{url}/v1/chat/completions",
                json={
                    "model": SERVED_MODEL,
                    "messages": [{"role": "user", "content": "What is 2 + 2?"}],
                    "max_tokens": 8,
                },
                timeout=30,
            )
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"]
            assert "/v1/chat/completions" in standin.paths()
            assert not standin.violations, standin.violations
            uid = run([*engine, "exec", CONTAINER, "id", "-u"]).strip()
            assert uid != "0", "the gateway must not run as root"
        finally:
            subprocess.run([*engine, "rm", "-f", CONTAINER], capture_output=True)
