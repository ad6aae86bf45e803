"""A real Prometheus (Debian's package) for tests, configured from the files in deploy/."""

from __future__ import annotations

import contextlib
import math
import runpy
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.factories import free_port
from tests.servers import ServerSpec, server_processes

DEPLOY = Path(__file__).parent.parent / "deploy"
CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
RULES = DEPLOY / "prometheus" / "rules"
BUILD = DEPLOY / "grafana" / "build.py"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "ttc.json"
SCRAPE_S = 1
# What compose and Kubernetes run Prometheus with beyond its config and storage
# (tests/unit/test_deploy.py checks they agree).
EXTRA_FLAGS = ("--enable-feature=exemplar-storage",)


def binary(name: str) -> str:
    """A Prometheus binary; `make test` installs Debian's package."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: `make test` installs Debian's prometheus package")
    return path


def dashboard() -> dict[str, Any]:
    """deploy/grafana/build.py's namespace: the panels, build() and render()."""
    return runpy.run_path(str(BUILD))


def dashboard_queries(source: str) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of the panels about `source`."""
    return [
        (panel.title, query.expr)
        for panel in dashboard()["panels"]()
        if panel.source == source
        for query in panel.queries
    ]


def recording_rules() -> list[str]:
    """The names every recording rule records."""
    names = []
    for path in sorted(RULES.glob("*.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names += [rule["record"] for rule in group["rules"] if "record" in rule]
    return names


def as_prometheus_sees_it(expr: str) -> str:
    """A dashboard expression with Grafana's variables filled in: everything, over a minute."""
    for variable in ("$strategy", "$model", "$key"):
        expr = expr.replace(variable, ".*")
    return expr.replace("$__rate_interval", "1m")


def with_local_credentials(config: dict[str, Any], directory: Path) -> dict[str, Any]:
    """The config with each job's credentials file (the gateway's /metrics token, which
    compose and Kubernetes mount) replaced by one in `directory`, so it can run here. The
    gateways of these tests ask for no token; any will do."""
    token = directory / "metrics-token"
    token.write_text("test-metrics-token")
    jobs = []
    for job in config["scrape_configs"]:
        if "credentials_file" in job.get("authorization", {}):
            job = {**job, "authorization": {**job["authorization"], "credentials_file": str(token)}}
        jobs.append(job)
    return {**config, "scrape_configs": jobs}


@contextlib.contextmanager
def prometheus(targets: Mapping[str, Sequence[str]]) -> Iterator[str]:
    """Run Prometheus with deploy/'s config and rules, scraping `targets` by job every second."""
    config = yaml.safe_load(CONFIG.read_text())
    config["global"] = {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"}
    config["rule_files"] = [str(RULES / "*.yml")]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(targets) <= set(jobs), f"deploy/ has no scrape job for {set(targets) - set(jobs)}"
    # Same jobs, but the targets found by DNS in production are the given loopback ones here.
    config["scrape_configs"] = [
        {
            **{k: v for k, v in jobs[name].items() if not k.endswith("_sd_configs")},
            "static_configs": [{"targets": list(addresses)}],
        }
        for name, addresses in targets.items()
    ]
    with tempfile.TemporaryDirectory(prefix="prometheus-") as tmp:
        config = with_local_credentials(config, Path(tmp))
        config_path = Path(tmp) / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        port = free_port()
        command = [
            binary("prometheus"),
            f"--config.file={config_path}",
            f"--storage.tsdb.path={tmp}/data",
            f"--web.listen-address=127.0.0.1:{port}",
            *EXTRA_FLAGS,
        ]
        spec = ServerSpec("prometheus", command, port, health="/-/ready")
        with server_processes(spec, ready_timeout_s=120):
            yield spec.url


def query(url: str, expr: str) -> list[dict[str, Any]]:
    """An instant query's result vector; a PromQL error fails loudly."""
    response = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    body = response.json()
    assert body.get("status") == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def exemplars(url: str, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    """The exemplars of the series `expr` selects, between two Unix times."""
    response = httpx.get(
        f"{url}/api/v1/query_exemplars",
        params={"query": expr, "start": start, "end": end},
        timeout=10,
    )
    body = response.json()
    assert body.get("status") == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]
    return result


def has_data(result: list[dict[str, Any]]) -> bool:
    """Whether a result holds at least one real number."""
    return any(math.isfinite(float(series["value"][1])) for series in result)


def wait_for_scrapes(url: str, job: str, scrapes: int = 3) -> None:
    """Wait until Prometheus has scraped `job` a few more times."""
    deadline = time.monotonic() + 60
    seen = None
    count = 0
    while time.monotonic() < deadline:
        result = query(url, f'timestamp(up{{job="{job}"}})')
        stamp = max((float(s["value"][1]) for s in result), default=None)
        if stamp is not None and stamp != seen:
            seen, count = stamp, count + 1
            if count > scrapes:
                return
        time.sleep(SCRAPE_S / 4)
    raise AssertionError(f"Prometheus did not scrape {job} within 60 s")
