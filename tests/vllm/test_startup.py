"""A vLLM server that cannot start fails the job at once, with the end of vLLM's own log."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.servers import ServerFailed, server_processes
from tests.vllm.conftest import vllm_spec


def test_a_vllm_server_that_cannot_start_fails_with_its_log(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    spec = vllm_spec("vllm-broken", missing, "broken")
    with pytest.raises(ServerFailed, match=r"vllm-broken exited with") as failure:
        with server_processes(spec, ready_timeout_s=600):
            pass
    assert str(missing) in str(failure.value), "the log's tail should say what went wrong"
