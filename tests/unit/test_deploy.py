"""deploy/'s compose file and Kubernetes manifests are valid and agree with each other.

Kubernetes objects are checked against the API's own schemas (kubernetes-validate, strict: an
unknown field is an error); the compose file by docker-compose's own `config` check; and the
gateway's environment in both is parsed by the gateway's settings, so what we ship starts.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml

from server.settings import Settings
from tests.factories import vllm_urls
from verifiers.base import VerifierConfig
from verifiers.prm import PRMConfig

DEPLOY = Path(__file__).parent.parent.parent / "deploy"
K8S_VERSION = "1.33"


def k8s_objects() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted((DEPLOY / "k8s").glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc
    ]


def named(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in k8s_objects() if o["kind"] == kind}


def prm_host(config: VerifierConfig) -> str | None:
    assert isinstance(config, PRMConfig)
    return urlparse(config.url).hostname


# Where the compose file and the Kubernetes Deployment mount the key file.
KEY_FILE_MOUNTS = {"/run/secrets/api-keys", "/etc/ttc/keys/api-keys.yaml"}
EXAMPLE_KEYS = DEPLOY / "api-keys.example.yaml"


def gateway_env(env: dict[str, str]) -> Settings:
    """The settings a gateway container with this environment starts with (the key file it
    mounts being deploy/'s example)."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            if key == "TTC_API_KEYS":
                assert value in KEY_FILE_MOUNTS, value
                value = str(EXAMPLE_KEYS)
            patch.setenv(key, value)
        return Settings()


@pytest.mark.parametrize("obj", k8s_objects(), ids=lambda o: f"{o['kind']}/{o['metadata']['name']}")
def test_kubernetes_objects_match_the_api_schema(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_kustomization_generates_every_config_map_the_pods_mount() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (DEPLOY / resource).is_file(), resource
    generated = set()
    for generator in kustomization["configMapGenerator"]:
        generated.add(generator["name"])
        for file in generator["files"]:
            assert (DEPLOY / file).is_file(), file
    mounted = set()
    for obj in k8s_objects():
        for volume in obj.get("spec", {}).get("template", {}).get("spec", {}).get("volumes", []):
            if "configMap" in volume:
                mounted.add(volume["configMap"]["name"])
            for source in volume.get("projected", {}).get("sources", []):
                mounted.add(source["configMap"]["name"])
    assert mounted == generated


def test_services_select_pods_that_exist() -> None:
    pod_labels = [
        o["spec"]["template"]["metadata"]["labels"]
        for o in k8s_objects()
        if o["kind"] in ("Deployment", "StatefulSet")
    ]
    for name, service in named("Service").items():
        selector = service["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pod_labels), name


def test_kubernetes_gateway_reaches_every_generator_replica_and_the_prm() -> None:
    container = named("Deployment")["gateway"]["spec"]["template"]["spec"]["containers"][0]
    settings = gateway_env({e["name"]: e["value"] for e in container["env"]})
    generators = named("StatefulSet")["vllm-generator"]
    replicas = generators["spec"]["replicas"]
    service = generators["spec"]["serviceName"]
    assert named("Service")[service]["spec"]["clusterIP"] == "None"
    # A StatefulSet pod is <name>-<i>.<service>: the gateway needs each to pin sessions.
    assert [urlparse(u).hostname for u in vllm_urls(settings)] == [
        f"vllm-generator-{i}.{service}" for i in range(replicas)
    ]
    assert prm_host(settings.verifiers["prm"]) in named("Service")
    assert set(settings.prices) == {"Qwen/Qwen2.5-1.5B-Instruct"}
    probes = (container["livenessProbe"], container["readinessProbe"])
    assert [p["httpGet"]["path"] for p in probes] == ["/health", "/ready"]
    assert (
        named("HorizontalPodAutoscaler")["gateway"]["spec"]["scaleTargetRef"]["name"] == "gateway"
    )


def test_kubernetes_lets_the_gateway_leave_the_service_and_drain_before_it_kills_it() -> None:
    pod = named("Deployment")["gateway"]["spec"]["template"]["spec"]
    settings = gateway_env({e["name"]: e["value"] for e in pod["containers"][0]["env"]})
    # Not ready while still serving, so the Service drops the pod before its socket closes.
    assert settings.shutdown_delay_s > 0
    needed = settings.shutdown_delay_s + settings.drain_grace_s
    assert pod["terminationGracePeriodSeconds"] >= needed
    assert settings.drain_grace_s > settings.limits.request_timeout_s


def test_compose_lets_the_gateway_drain_before_it_kills_it() -> None:
    gateway = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["gateway"]
    settings = gateway_env(gateway["environment"])
    grace = gateway["stop_grace_period"]
    assert grace.endswith("s"), "seconds keep the comparison below simple"
    assert float(grace.removesuffix("s")) >= settings.shutdown_delay_s + settings.drain_grace_s


def test_prometheus_finds_what_compose_and_kubernetes_run() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    names = {
        name
        for job in config["scrape_configs"]
        for sd in job["dns_sd_configs"]
        for name in sd["names"]
    }
    headless = {n for n, s in named("Service").items() if s["spec"].get("clusterIP") == "None"}
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    assert names <= headless
    assert names <= set(compose)


def test_compose_file_is_valid_and_its_gateway_starts() -> None:
    tool = shutil.which("docker-compose")
    assert tool, "`make test` installs Debian's docker-compose"
    checked = subprocess.run(
        [tool, "-f", str(DEPLOY / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    settings = gateway_env(compose["services"]["gateway"]["environment"])
    assert [urlparse(u).hostname for u in vllm_urls(settings)] == ["vllm-generator"]
    assert prm_host(settings.verifiers["prm"]) == "vllm-prm"
    for mount in (
        compose["services"]["prometheus"]["volumes"] + compose["services"]["grafana"]["volumes"]
    ):
        source = mount.split(":")[0]
        if source.startswith("."):
            assert (DEPLOY / source).exists(), source


def test_gateways_read_the_mounted_key_file_and_share_one_redis() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    gateway = compose["services"]["gateway"]
    (secret,) = gateway["secrets"]
    assert gateway["environment"]["TTC_API_KEYS"] == f"/run/secrets/{secret}"
    assert (DEPLOY / compose["secrets"][secret]["file"]).resolve() == EXAMPLE_KEYS.resolve()
    settings = gateway_env(gateway["environment"])
    assert settings.key_ring() is not None and settings.redis_url is not None
    assert urlparse(settings.redis_url.get_secret_value()).hostname in compose["services"]

    pod = named("Deployment")["gateway"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    (mount,) = [
        m for m in container["volumeMounts"] if env["TTC_API_KEYS"].startswith(m["mountPath"])
    ]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    (generator,) = [
        g for g in kustomization["secretGenerator"] if g["name"] == volume["secret"]["secretName"]
    ]
    (entry,) = generator["files"]
    name, _, source = entry.partition("=")
    assert env["TTC_API_KEYS"] == f"{mount['mountPath']}/{name}"
    assert (DEPLOY / source).resolve() == EXAMPLE_KEYS.resolve()
    settings = gateway_env(env)
    assert settings.key_ring() is not None and settings.redis_url is not None
    assert urlparse(settings.redis_url.get_secret_value()).hostname in named("Service")
