"""k8s/: every manifest and every rendered overlay, schema-validated offline.

Built-in kinds are checked strictly (unknown fields rejected) by kubernetes-validate's
bundled OpenAPI schemas; Istio's kinds by the subset schemas in this file, transcribed
from istio/api; the Prometheus Operator's PrometheusRule by its CRD's schema. Overlays
are rendered with the real kustomize (`kubectl kustomize` or `kustomize build`); the
rest checks what docs/deployment/kubernetes.md promises.
"""

from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from authz_server.policy.load import load_policy

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="pip install kubernetes-validate (test extra)"
)
jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
TREES = ["base", "overlays/spire", "overlays/redis", "overlays/istio"]
VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
NOT_MANIFESTS = {"kustomization.yaml", "policy.yaml", "meshconfig-values.yaml"}
EXTERNAL_CONFIGMAPS = {"authz-server-trust-bundle"}  # written by trust-manager or by hand

_STR, _BOOL, _INT = {"type": "string"}, {"type": "boolean"}, {"type": "integer"}
_LABELS = {"type": "object", "additionalProperties": _STR}
_STRINGS = {"type": "array", "items": _STR}
_OPERATION = {
    k: _STRINGS
    for k in (
        "hosts",
        "notHosts",
        "ports",
        "notPorts",
        "methods",
        "notMethods",
        "paths",
        "notPaths",
    )
}
_SOURCE = {
    k: _STRINGS
    for k in (
        "principals",
        "notPrincipals",
        "requestPrincipals",
        "notRequestPrincipals",
        "namespaces",
        "notNamespaces",
        "ipBlocks",
        "notIpBlocks",
        "remoteIpBlocks",
        "notRemoteIpBlocks",
    )
}


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


# security.istio.io/v1 AuthorizationPolicy (istio/api security/v1beta1/authorization_policy.proto)
AUTHORIZATION_POLICY_SPEC = _closed(
    {
        "selector": _closed({"matchLabels": _LABELS}),
        "targetRef": {"type": "object"},
        "targetRefs": {"type": "array"},
        "action": {"enum": ["ALLOW", "DENY", "AUDIT", "CUSTOM"]},
        "provider": _closed({"name": _STR}, ("name",)),
        "rules": {
            "type": "array",
            "items": _closed(
                {
                    "from": {"type": "array", "items": _closed({"source": _closed(_SOURCE)})},
                    "to": {"type": "array", "items": _closed({"operation": _closed(_OPERATION)})},
                    "when": {"type": "array"},
                }
            ),
        },
    }
)
# MeshConfig.ExtensionProvider.EnvoyExternalAuthorizationGrpcProvider (mesh/v1alpha1/config.proto)
EXT_AUTHZ_GRPC_PROVIDER = _closed(
    {
        "service": _STR,
        "port": _INT,
        "timeout": {"type": "string", "pattern": r"^\d+(\.\d+)?(ms|s)$"},
        "failOpen": _BOOL,
        "statusOnError": {"type": "string", "pattern": r"^[1-5]\d\d$"},
        "includeRequestBodyInCheck": _closed(
            {"maxRequestBytes": _INT, "allowPartialMessage": _BOOL, "packAsBytes": _BOOL}
        ),
    },
    ("service", "port"),
)
MESH_CONFIG = {
    "type": "object",
    "properties": {
        "extensionProviders": {
            "type": "array",
            "items": _closed(
                {"name": _STR, "envoyExtAuthzGrpc": EXT_AUTHZ_GRPC_PROVIDER}, ("name",)
            ),
        },
        "pathNormalization": _closed(
            {
                "normalization": {
                    "enum": ["DEFAULT", "NONE", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"]
                }
            }
        ),
    },
}
ISTIO_SCHEMAS = {
    ("security.istio.io/v1", "AuthorizationPolicy"): AUTHORIZATION_POLICY_SPEC,
    ("install.istio.io/v1alpha1", "IstioOperator"): _closed({"meshConfig": MESH_CONFIG}),
}
# monitoring.coreos.com/v1 PrometheusRule (prometheus-operator's CRD, openAPIV3Schema)
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$",
}
PROMETHEUS_RULE = _closed(
    {
        "record": _STR,
        "alert": _STR,
        "expr": {"anyOf": [_INT, _STR]},
        "for": _DURATION,
        "keep_firing_for": {**_DURATION, "minLength": 1},
        "labels": _LABELS,
        "annotations": _LABELS,
    },
    ("expr",),
)
PROMETHEUS_RULE_SPEC = _closed(
    {
        "groups": {
            "type": "array",
            "items": _closed(
                {
                    "name": {"type": "string", "minLength": 1},
                    "interval": _DURATION,
                    "query_offset": _DURATION,
                    "limit": _INT,
                    "labels": _LABELS,
                    "partial_response_strategy": {"type": "string"},
                    "rules": {"type": "array", "items": PROMETHEUS_RULE},
                },
                ("name",),
            ),
        }
    }
)
CRD_SCHEMAS = {
    **ISTIO_SCHEMAS,
    ("monitoring.coreos.com/v1", "PrometheusRule"): PROMETHEUS_RULE_SPEC,
}


def source_manifests() -> list[Path]:
    """Every complete object in k8s/: not kustomizations, patches, policies or values."""
    patches: set[Path] = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        for patch in yaml.safe_load(kustomization.read_text()).get("patches", []):
            if "path" in patch:
                patches.add((kustomization.parent / patch["path"]).resolve())
    return sorted(
        p for p in K8S.rglob("*.yaml") if p.name not in NOT_MANIFESTS and p.resolve() not in patches
    )


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def validate(doc: dict[str, Any]) -> None:
    """Strict schema validation of one object, built-in, Istio or Prometheus Operator."""
    schema = CRD_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
    if schema is not None:
        jsonschema.validate(doc["spec"], schema)
        assert set(doc) <= {"apiVersion", "kind", "metadata", "spec"}
        return
    for version in VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


@cache
def renderer() -> tuple[str, ...] | None:
    if shutil.which("kubectl"):
        return ("kubectl", "kustomize")
    if shutil.which("kustomize"):
        return ("kustomize", "build")
    return None


@cache
def rendered(tree: str) -> tuple[dict[str, Any], ...]:
    argv = renderer()
    if argv is None:
        pytest.skip("no kustomize renderer (kubectl or kustomize) on PATH")
    result = subprocess.run(
        [*argv, str(K8S / tree)], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return tuple(docs(result.stdout))


def find(objects: tuple[dict[str, Any], ...], kind: str, name: str) -> dict[str, Any]:
    [obj] = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj


def server_container(objects: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    pod = find(objects, "Deployment", "authz-server")["spec"]["template"]["spec"]
    [container] = [c for c in pod["containers"] if c["name"] == "authz-server"]
    return container


def env(objects: tuple[dict[str, Any], ...]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in server_container(objects)["env"]}


@pytest.mark.parametrize("path", source_manifests(), ids=lambda p: str(p.relative_to(K8S)))
def test_every_source_manifest_validates(path: Path) -> None:
    for doc in docs(path.read_text()):
        validate(doc)


@pytest.mark.parametrize("tree", TREES)
def test_every_rendered_object_validates(tree: str) -> None:
    objects = rendered(tree)
    assert objects
    for doc in objects:
        validate(doc)


def test_schemas_reject_unknown_fields() -> None:
    """Guard: strict validation would catch a typo (so passing means something)."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "x"},
        "spec": {"ports": [{"port": 1}], "selectr": {}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(service)
    policy = {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "x"},
        "spec": {"action": "CUSTOM", "provder": {}},
    }
    with pytest.raises(jsonschema.ValidationError):
        validate(policy)


@pytest.mark.parametrize("tree", TREES)
def test_pods_are_locked_down(tree: str) -> None:
    """Non-root, read-only root file system, no capabilities, seccomp, limits (every pod)."""
    for deployment in (o for o in rendered(tree) if o["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert not any("hostPath" in v for v in pod.get("volumes", []))
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert {"cpu", "memory"} <= set(c["resources"]["requests"])
            assert "memory" in c["resources"]["limits"]
            assert not c["image"].endswith(":latest") and ":" in c["image"]


def test_server_probes_use_grpc_health() -> None:
    container = server_container(rendered("base"))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": 9191}, probe


def test_disruption_budget_autoscaler_and_services_target_the_server() -> None:
    objects = rendered("base")
    labels = find(objects, "Deployment", "authz-server")["spec"]["template"]["metadata"]["labels"]
    pdb = find(objects, "PodDisruptionBudget", "authz-server")["spec"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    hpa = find(objects, "HorizontalPodAutoscaler", "authz-server")["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "authz-server",
    }
    assert hpa["minReplicas"] >= 2, "one replica plus a PDB blocks node drains"
    for service in (o for o in objects if o["kind"] == "Service"):
        assert service["spec"]["selector"].items() <= labels.items()


def test_network_policy_admits_only_envoy_to_check() -> None:
    objects = rendered("base")
    policy = find(objects, "NetworkPolicy", "authz-server")["spec"]
    check_rules = [r for r in policy["ingress"] if {"port": 9191, "protocol": "TCP"} in r["ports"]]
    assert [peer["podSelector"] for r in check_rules for peer in r["from"]] == [
        {"matchLabels": {"authz-server/client": "envoy"}}
    ]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}


def test_namespace_enforces_the_restricted_pod_security_standard() -> None:
    ns = find(rendered("base"), "Namespace", "authz-system")
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("tree", TREES)
def test_mounted_config_maps_exist_and_the_policy_loads(tree: str, tmp_path: Path) -> None:
    """The policy ConfigMap is one `authz-server validate` accepts, in every overlay."""
    objects = rendered(tree)
    pod = find(objects, "Deployment", "authz-server")["spec"]["template"]["spec"]
    config_maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    for volume in pod["volumes"]:
        if "configMap" in volume:
            name = volume["configMap"]["name"]
            assert name in config_maps or name in EXTERNAL_CONFIGMAPS, name
    for file_name, text in config_maps["authz-server-policy"]["data"].items():
        (tmp_path / file_name).write_text(text)
    assert load_policy(tmp_path).rules


def test_spire_overlay_reads_bundles_from_the_workload_api() -> None:
    objects = rendered("overlays/spire")
    pod = find(objects, "Deployment", "authz-server")["spec"]["template"]["spec"]
    variables = env(objects)
    assert "AUTHZ_TRUST_BUNDLE" not in variables
    socket = variables["AUTHZ_WORKLOAD_API"].removeprefix("unix://")
    [volume] = [v for v in pod["volumes"] if "csi" in v]
    assert volume["csi"] == {"driver": "csi.spiffe.io", "readOnly": True}
    mounts = {m["name"]: m["mountPath"] for m in server_container(objects)["volumeMounts"]}
    assert socket.startswith(mounts[volume["name"]] + "/")


def test_redis_overlay_shares_state_and_fences_the_store() -> None:
    objects = rendered("overlays/redis")
    assert env(objects)["AUTHZ_STORE"] == "redis://authz-server-redis:6379/0"
    store_policy = find(objects, "NetworkPolicy", "authz-server-redis")["spec"]
    assert [p["podSelector"] for r in store_policy["ingress"] for p in r["from"]] == [
        {"matchLabels": {"app.kubernetes.io/name": "authz-server"}}
    ]
    egress = find(objects, "NetworkPolicy", "authz-server")["spec"]["egress"]
    assert any({"port": 6379, "protocol": "TCP"} in rule["ports"] for rule in egress)


def istio_provider() -> dict[str, Any]:
    operator = yaml.safe_load((K8S / "overlays/istio/istio-operator.yaml").read_text())
    [provider] = operator["spec"]["meshConfig"]["extensionProviders"]
    return provider


def test_istio_mesh_config_is_the_same_for_istioctl_and_helm() -> None:
    operator = yaml.safe_load((K8S / "overlays/istio/istio-operator.yaml").read_text())
    values = yaml.safe_load((K8S / "overlays/istio/meshconfig-values.yaml").read_text())
    validate(operator)
    jsonschema.validate(values["meshConfig"], MESH_CONFIG)
    assert operator["spec"]["meshConfig"] == values["meshConfig"]


def test_istio_provider_points_at_the_service_fails_closed_and_sends_whole_bodies() -> None:
    objects = rendered("overlays/istio")
    grpc = istio_provider()["envoyExtAuthzGrpc"]
    service = find(objects, "Service", "authz-server")
    assert grpc["service"] == f"authz-server.{service['metadata']['namespace']}.svc.cluster.local"
    assert grpc["port"] in [p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"]
    assert grpc["failOpen"] is False
    assert grpc["statusOnError"] == "503"
    seconds = float(grpc["timeout"].removesuffix("s"))
    assert 0.1 <= seconds <= 2, "Istio's default is 600s"
    assert grpc["includeRequestBodyInCheck"]["allowPartialMessage"] is False


def test_istio_authorization_policy_uses_the_custom_provider() -> None:
    objects = rendered("overlays/istio")
    policy = find(objects, "AuthorizationPolicy", "authz-server")
    assert policy["metadata"]["namespace"] == "istio-system"  # root namespace: mesh-wide
    assert policy["spec"]["action"] == "CUSTOM"
    assert policy["spec"]["provider"]["name"] == istio_provider()["name"]
    assert policy["spec"]["selector"]["matchLabels"], "never every workload, incl. the server"


def test_istio_policy_does_not_require_certificates_istio_never_sends() -> None:
    objects = rendered("overlays/istio")
    text = find(objects, "ConfigMap", "authz-server-policy")["data"]["policy.yaml"]
    assert yaml.safe_load(text)["identity"]["require_certificate"] is False
    assert "AUTHZ_TRUST_BUNDLE" not in env(objects)


def serve_flags() -> set[str]:
    """`serve`'s long options, from the CLI's own parser."""
    import argparse

    from authz_server.cli.main import build_parser

    [commands] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return {o for a in commands.choices["serve"]._actions for o in a.option_strings}


# Flags of `serve` (docs/cli.md#serve) that the manifests already set but `serve` does not parse
# yet. Each must leave this set the day it lands (the test below fails until it does).
PENDING_FLAGS: set[str] = set()


def test_environment_variables_are_serve_flags() -> None:
    """Every AUTHZ_* the manifests and the compose stack set is one `serve` reads."""
    names: set[str] = set()
    for tree in TREES:
        for obj in rendered(tree):
            if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "authz-server":
                names |= set(env((obj,)))
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    names |= set(compose["services"]["authz-server"]["environment"])
    flags = {"--" + n.removeprefix("AUTHZ_").lower().replace("_", "-") for n in names}
    known = serve_flags()
    assert flags - known == PENDING_FLAGS - known
    assert not PENDING_FLAGS & known, "remove landed flags from PENDING_FLAGS"
