"""What `make install-test` put in the virtual environment, and what the gateway imports."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import distributions


def test_embedded_install_pulled_no_cuda_packages() -> None:
    names = {(d.metadata["Name"] or "").lower() for d in distributions()}
    assert "torch" in names
    assert not sorted(n for n in names if n.startswith(("nvidia-", "triton", "cuda-")))


def test_the_gateway_imports_without_the_embedded_model() -> None:
    # The image holds the gateway alone, without torch: building the app, with every
    # registered backend, must not import it (the embedded backend loads it when it starts).
    probe = "import sys, server.app; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
