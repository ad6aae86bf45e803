"""deploy/'s compose file and Kubernetes manifests are valid, agree with each other, and are
hardened.

Kubernetes objects are checked against the API's own schemas (kubernetes-validate, strict: an
unknown field is an error); the compose file by docker-compose's own `config` check; and the
gateway's environment in both is parsed by the gateway's settings, so what we ship starts.
The hardening checks read the same files: restricted pods, NetworkPolicies that admit only the
gateway to vLLM and Redis, pinned images, monitoring on localhost in compose, and secrets
(Redis's password, vLLM's key, the /metrics token, the key file) that the operator supplies
and that reach both ends. Secrets are stood in for by STAND_INS.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry
from pydantic import SecretStr, ValidationError

from server.keys import KeyRing
from server.metrics import Metrics
from server.settings import Settings
from tests.factories import vllm_urls
from tests.prometheus import EXTRA_FLAGS
from verifiers.base import VerifierConfig
from verifiers.prm import PRMConfig

ROOT = Path(__file__).parent.parent.parent
DEPLOY = ROOT / "deploy"
K8S_VERSION = "1.33"
WORKLOADS = ("Deployment", "StatefulSet")


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
                # The example's keys are public: only a demo may start with them.
                patch.setenv("TTC_DEMO", "true")
            patch.setenv(key, value)
        return Settings()


# What the operator supplies, stood in for: Kubernetes Secrets by (name, key), compose's
# variables by name. Each value differs, so a test can tell where one came from; all are
# URL-safe, as the documented `openssl rand -hex` ones are.
def stand_in(*name: str) -> str:
    return "stand-in-" + "-".join(name)


COMPOSE_SECRETS = (
    "REDIS_PASSWORD",
    "VLLM_API_KEY",
    "METRICS_TOKEN",
    "GRAFANA_ADMIN_PASSWORD",
    "TTC_API_KEYS_FILE",
)


def compose_stand_ins() -> dict[str, str]:
    """Compose's secret variables; the key file is the example, for validation only."""
    return {
        **{name: stand_in(name) for name in COMPOSE_SECRETS},
        "TTC_API_KEYS_FILE": str(EXAMPLE_KEYS),
    }


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """A container's environment as Kubernetes gives it: a Secret's key is its stand-in, and
    $(VAR) expands a variable defined above."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = stand_in(ref["name"], ref["key"])
        else:
            env[var["name"]] = expand(var["value"], env)
    return env


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes's $(VAR) expansion; an unknown variable stays as written."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), text)


def container_args(container: dict[str, Any]) -> list[str]:
    """A container's arguments, expanded as Kubernetes does."""
    env = container_env(container)
    return [expand(arg, env) for arg in container.get("args", [])]


def flag(args: list[str], name: str) -> str | None:
    """The value of `--name=value` or `--name value` in args; None if absent."""
    for i, arg in enumerate(args):
        if arg.startswith(f"{name}="):
            return arg.partition("=")[2]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return None


def pod_specs() -> dict[str, dict[str, Any]]:
    """Each workload's pod template spec, by workload name."""
    return {
        o["metadata"]["name"]: o["spec"]["template"]["spec"]
        for o in k8s_objects()
        if o["kind"] in WORKLOADS
    }


def only_container(workload: str) -> dict[str, Any]:
    container: dict[str, Any]
    (container,) = pod_specs()[workload]["containers"]
    return container


def kubernetes_gateway() -> Settings:
    return gateway_env(container_env(only_container("gateway")))


def docker_compose() -> str:
    tool = shutil.which("docker-compose")
    assert tool, "`make test` installs Debian's docker-compose"
    return tool


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`docker-compose config` with exactly these variables (no deploy/.env, no shell's)."""
    with tempfile.NamedTemporaryFile(suffix=".env") as no_env:
        return subprocess.run(
            [docker_compose(), "--env-file", no_env.name, "-f", str(DEPLOY / "docker-compose.yml")]
            + ["config"],
            capture_output=True,
            text=True,
            env={"PATH": os.environ.get("PATH", ""), **env},
        )


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as docker-compose runs it, given the stand-in secrets."""
    checked = compose_config(compose_stand_ins())
    assert checked.returncode == 0, checked.stderr
    config: dict[str, Any] = yaml.safe_load(checked.stdout)
    return config


def compose_gateway(compose: dict[str, Any]) -> Settings:
    return gateway_env(compose["services"]["gateway"]["environment"])


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
        o["spec"]["template"]["metadata"]["labels"] for o in k8s_objects() if o["kind"] in WORKLOADS
    ]
    for name, service in named("Service").items():
        selector = service["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pod_labels), name


def test_kubernetes_gateway_reaches_every_generator_replica_and_the_prm() -> None:
    container = only_container("gateway")
    settings = kubernetes_gateway()
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
    pod = pod_specs()["gateway"]
    settings = kubernetes_gateway()
    # Not ready while still serving, so the Service drops the pod before its socket closes.
    assert settings.shutdown_delay_s > 0
    needed = settings.shutdown_delay_s + settings.drain_grace_s
    assert pod["terminationGracePeriodSeconds"] >= needed
    assert settings.drain_grace_s > settings.limits.request_timeout_s


def test_compose_lets_the_gateway_drain_before_it_kills_it(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]
    settings = compose_gateway(compose)
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


def test_prometheus_runs_with_the_flags_the_tests_run_it_with() -> None:
    # Exemplar storage above all: without it the latency's trace ids are dropped at scrape.
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    for args in (compose["prometheus"]["command"], only_container("prometheus")["args"]):
        assert set(EXTRA_FLAGS) <= set(args), args


def test_grafana_links_exemplars_to_traces() -> None:
    path = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
    (prometheus,) = yaml.safe_load(path.read_text())["datasources"]
    (link,) = prometheus["jsonData"]["exemplarTraceIdDestinations"]
    # The label the gateway's exemplars carry (server.metrics.Metrics.observe).
    assert link == {"name": "trace_id", "datasourceUid": "traces"}


def test_compose_file_is_valid_and_its_gateway_starts(compose: dict[str, Any]) -> None:
    settings = compose_gateway(compose)
    assert [urlparse(u).hostname for u in vllm_urls(settings)] == ["vllm-generator"]
    assert prm_host(settings.verifiers["prm"]) == "vllm-prm"
    raw = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    for mount in raw["prometheus"]["volumes"] + raw["grafana"]["volumes"]:
        source = mount.split(":")[0]
        if source.startswith("."):
            assert (DEPLOY / source).exists(), source


def test_gateways_read_the_mounted_key_file_and_share_one_redis(compose: dict[str, Any]) -> None:
    gateway = compose["services"]["gateway"]
    (secret,) = gateway["secrets"]
    assert gateway["environment"]["TTC_API_KEYS"] == f"/run/secrets/{secret['source']}"
    settings = compose_gateway(compose)
    assert settings.key_ring() is not None and settings.redis_url is not None
    assert urlparse(settings.redis_url.get_secret_value()).hostname in compose["services"]

    pod = pod_specs()["gateway"]
    container = only_container("gateway")
    env = container_env(container)
    (mount,) = [
        m for m in container["volumeMounts"] if env["TTC_API_KEYS"].startswith(m["mountPath"])
    ]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == "api-keys"
    assert env["TTC_API_KEYS"] == f"{mount['mountPath']}/api-keys.yaml"
    settings = kubernetes_gateway()
    assert settings.key_ring() is not None and settings.redis_url is not None
    assert urlparse(settings.redis_url.get_secret_value()).hostname in named("Service")


# The hardening, each check against both stacks where both have the thing.


def test_the_operator_supplies_the_key_file_not_the_published_example() -> None:
    # Compose: the key file's path is a variable without a default.
    raw = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    (secret,) = raw["services"]["gateway"]["secrets"]
    source = raw["secrets"][secret]["file"]
    assert re.fullmatch(r"\$\{TTC_API_KEYS_FILE:\?[^}]+\}", source), source
    # Kubernetes: the api-keys Secret is the operator's; nothing here makes it.
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    generated = {g["name"] for g in kustomization.get("secretGenerator", [])}
    shipped = {o["metadata"]["name"] for o in k8s_objects() if o["kind"] == "Secret"}
    assert "api-keys" not in generated | shipped
    for path in (DEPLOY / "docker-compose.yml", DEPLOY / "kustomization.yaml"):
        lines = [line for line in path.read_text().splitlines() if not line.strip().startswith("#")]
        assert not [line for line in lines if EXAMPLE_KEYS.name in line], path


def test_compose_refuses_to_start_without_each_secret() -> None:
    for name in COMPOSE_SECRETS:
        env = {k: v for k, v in compose_stand_ins().items() if k != name}
        checked = compose_config(env)
        assert checked.returncode != 0, f"compose has a default for {name}"
        assert name in checked.stderr, checked.stderr


def effective_security_context(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """The container's securityContext over the pod's (the fields both have)."""
    return {**pod.get("securityContext", {}), **container.get("securityContext", {})}


@pytest.mark.parametrize("workload", sorted(pod_specs()))
def test_every_container_runs_restricted(workload: str) -> None:
    pod = pod_specs()[workload]
    for container in pod.get("initContainers", []) + pod["containers"]:
        context = effective_security_context(pod, container)
        assert context.get("runAsNonRoot") is True, container["name"]
        assert isinstance(context.get("runAsUser"), int) and context["runAsUser"] > 0
        assert context.get("seccompProfile") == {"type": "RuntimeDefault"}
        assert context.get("allowPrivilegeEscalation") is False
        assert context.get("readOnlyRootFilesystem") is True
        assert context.get("capabilities") == {"drop": ["ALL"]}
        assert not context.get("privileged")
    # None of them talks to the Kubernetes API.
    assert pod.get("automountServiceAccountToken") is False


def writable_dirs(workload: str, container: dict[str, Any]) -> list[PurePosixPath]:
    """Where a container with a read-only root file system can write: its emptyDir mounts."""
    volumes = {v["name"]: v for v in pod_specs()[workload].get("volumes", [])}
    return [
        PurePosixPath(m["mountPath"])
        for m in container.get("volumeMounts", [])
        if "emptyDir" in volumes[m["name"]] and not m.get("readOnly")
    ]


@pytest.mark.parametrize("workload", ["vllm-generator", "vllm-prm"])
def test_vllm_writes_its_caches_and_tmp_to_volumes(workload: str) -> None:
    container = only_container(workload)
    env = container_env(container)
    writable = writable_dirs(workload, container)
    caches = ["HOME", "HF_HOME", "VLLM_CACHE_ROOT", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR"]
    for path in [PurePosixPath(env[name]) for name in caches] + [PurePosixPath("/tmp")]:
        assert any(path.is_relative_to(d) for d in writable), path
    # torch names its cache after the user, which this uid is not in /etc/passwd as.
    assert env.get("USER")


ANYONE = "anyone"


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector selects these labels."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        if operator in ("In", "NotIn"):
            held = (labels.get(key) in expression["values"]) == (operator == "In")
        else:
            held = (key in labels) == (operator == "Exists")
        if not held:
            return False
    return True


def admitted(workload: str) -> set[str]:
    """Who the NetworkPolicies let connect to a workload's pods: workloads of the namespace by
    name, or ANYONE (any pod, another namespace or an address range counts as anyone)."""
    labels = {
        name: o["spec"]["template"]["metadata"]["labels"]
        for o in k8s_objects()
        if o["kind"] in WORKLOADS
        for name in [o["metadata"]["name"]]
    }
    policies = [
        p["spec"]
        for p in k8s_objects()
        if p["kind"] == "NetworkPolicy"
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and selects(p["spec"]["podSelector"], labels[workload])
    ]
    if not policies:
        return {ANYONE}  # not isolated
    sources: set[str] = set()
    for rule in (rule for policy in policies for rule in policy.get("ingress", [])):
        for peer in rule.get("from") or [{}]:
            if set(peer) != {"podSelector"} or not peer["podSelector"]:
                sources.add(ANYONE)
            else:
                sources |= {n for n, ls in labels.items() if selects(peer["podSelector"], ls)}
    return sources


def test_network_policies_admit_only_the_gateway_to_vllm_and_redis() -> None:
    assert {workload: admitted(workload) for workload in pod_specs()} == {
        "gateway": {ANYONE},  # its clients, and Prometheus with the /metrics token
        "vllm-generator": {"gateway", "prometheus"},  # Prometheus scrapes vLLM's /metrics
        "vllm-prm": {"gateway", "prometheus"},
        "redis": {"gateway"},
        "prometheus": {"grafana"},
        "grafana": set(),  # kubectl port-forward
    }
    scraped = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert {"vllm-generator", "vllm-prm"} <= {j["job_name"] for j in scraped["scrape_configs"]}


def project_version() -> str:
    version: str = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    return version


def image_tag(image: str) -> str:
    """The tag of an image reference ('' if none); a registry's port is no tag."""
    name = image.rpartition("/")[2]
    return name.partition(":")[2]


def shipped_images(raw_compose: dict[str, Any]) -> dict[str, str]:
    """Every image both stacks run, by where it is named (a service without one: '')."""
    images = {
        f"k8s {workload}/{c['name']}": c["image"]
        for workload, pod in pod_specs().items()
        for c in pod.get("initContainers", []) + pod["containers"]
    }
    for name, service in raw_compose["services"].items():
        images[f"compose {name}"] = service.get("image", "")
    return images


def test_every_image_is_pinned_to_a_release() -> None:
    raw = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    for where, image in shipped_images(raw).items():
        tag = image_tag(image)
        # A release (1.2.3, v1.2.3, 1.2.3-alpine), not latest, a missing tag or a moving 7.4.
        assert re.fullmatch(r"v?\d+\.\d+\.\d+(-[\w.]+)?", tag), f"{where}: {image!r}"
    # The gateway's own image is tagged with the project's version.
    assert image_tag(only_container("gateway")["image"]) == project_version()
    assert image_tag(raw["services"]["gateway"]["image"]) == project_version()


def published_ports(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host address, host port) of each port a compose service publishes."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append((port.get("host_ip", "0.0.0.0"), str(port.get("published"))))
        else:
            parts = str(port).split("/")[0].split(":")
            host = parts[0] if len(parts) == 3 else "0.0.0.0"
            ports.append((host, parts[-2] if len(parts) > 1 else parts[-1]))
    return ports


def test_compose_publishes_only_the_gateway_beyond_localhost(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert published_ports(services[name]), name
    for name, service in services.items():
        if name != "gateway":
            assert all(host == "127.0.0.1" for host, _ in published_ports(service)), name
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == stand_in(
        "GRAFANA_ADMIN_PASSWORD"
    )


def test_kubernetes_grafana_admin_password_is_the_operators() -> None:
    env = container_env(only_container("grafana"))
    assert env["GF_SECURITY_ADMIN_PASSWORD"].startswith("stand-in-"), "from a Secret"


def redis_password(url: SecretStr | None) -> str | None:
    assert url is not None
    return urlparse(url.get_secret_value()).password


def test_redis_requires_the_password_the_gateway_url_carries(compose: dict[str, Any]) -> None:
    redis = only_container("redis")
    password = flag(container_args(redis), "--requirepass")
    assert password is not None and password.startswith("stand-in-"), "from a Secret"
    assert redis_password(kubernetes_gateway().redis_url) == password
    # The readiness probe's redis-cli authenticates with the same password.
    assert container_env(redis)["REDISCLI_AUTH"] == password

    redis = compose["services"]["redis"]
    assert flag(redis["command"], "--requirepass") == stand_in("REDIS_PASSWORD")
    assert redis_password(compose_gateway(compose).redis_url) == stand_in("REDIS_PASSWORD")
    assert redis["environment"]["REDISCLI_AUTH"] == stand_in("REDIS_PASSWORD")


def test_vllm_requires_the_api_key_the_gateway_sends(compose: dict[str, Any]) -> None:
    # The gateway sends vllm.api_key to every vLLM server it opens a client for: the
    # generators and the PRM verifier alike (verifier configs have no key of their own).
    sent = kubernetes_gateway().vllm.api_key
    assert sent is not None and sent.startswith("stand-in-"), "from a Secret"
    for workload in ("vllm-generator", "vllm-prm"):
        assert flag(container_args(only_container(workload)), "--api-key") == sent, workload

    assert compose_gateway(compose).vllm.api_key == stand_in("VLLM_API_KEY")
    for name in ("vllm-generator", "vllm-prm"):
        command = compose["services"][name]["command"]
        assert flag(command, "--api-key") == stand_in("VLLM_API_KEY"), name


def test_prometheus_scrapes_the_gateway_with_its_metrics_token(compose: dict[str, Any]) -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "ttc-gateway"]
    token_file = PurePosixPath(job["authorization"]["credentials_file"])

    # Kubernetes: Prometheus mounts the Secret key the gateway's TTC_METRICS_TOKEN comes from.
    token = kubernetes_gateway().metrics_token
    assert token is not None and token.get_secret_value().startswith("stand-in-")
    pod = pod_specs()["prometheus"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounted = set()
    for mount in only_container("prometheus")["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        for item in secret.get("items", []) if secret else []:
            path = PurePosixPath(mount["mountPath"]) / item["path"]
            mounted.add((path, stand_in(secret["secretName"], item["key"])))
    assert (token_file, token.get_secret_value()) in mounted

    # Compose: Prometheus writes the gateway's METRICS_TOKEN to that file, on a tmpfs.
    token = compose_gateway(compose).metrics_token
    assert token is not None and token.get_secret_value() == stand_in("METRICS_TOKEN")
    prometheus = compose["services"]["prometheus"]
    assert prometheus["environment"]["METRICS_TOKEN"] == token.get_secret_value()
    assert f'"$$METRICS_TOKEN" > {token_file}' in " ".join(prometheus["entrypoint"])
    assert str(token_file.parent) in prometheus["tmpfs"]


def test_the_server_refuses_the_published_example_keys_unless_a_demo() -> None:
    ring = KeyRing.load(str(EXAMPLE_KEYS))
    # The list the server refuses is the example file's own keys.
    assert sorted(ring.published_examples()) == sorted(ring.aliases)
    with pytest.raises(ValidationError, match="published example keys"):
        Settings(api_keys=SecretStr(str(EXAMPLE_KEYS)))
    assert Settings(api_keys=SecretStr(str(EXAMPLE_KEYS)), demo=True).key_ring() is not None
    assert Settings(api_keys=SecretStr("sk-own-key")).key_ring() is not None


def test_the_gateway_scales_on_a_load_metric_it_exports_and_keeps_one_pod_through_drains() -> None:
    objects = {(o["kind"], o["metadata"]["name"]): o for o in k8s_objects()}
    scaler = objects[("HorizontalPodAutoscaler", "gateway")]["spec"]
    (pods,) = [m["pods"] for m in scaler["metrics"] if m["type"] == "Pods"]
    exported = {m.name for m in Metrics(CollectorRegistry()).registry.collect()}
    assert pods["metric"]["name"] in exported
    budget = objects[("PodDisruptionBudget", "gateway")]["spec"]
    labels = objects[("Deployment", "gateway")]["spec"]["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= labels.items()
    assert 1 <= budget["minAvailable"] < scaler["minReplicas"]
