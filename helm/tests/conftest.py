"""Shared fixtures of the chart checks: the chart, the module combinations it is rendered for, and
helpers that turn a render into Kubernetes objects.

Run through `cargo xtask chart` (which prepares the virtualenv); nothing here needs a cluster.
"""

from __future__ import annotations

import pathlib
from typing import Any

import helm_python as helm
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "trellis"
RELEASE = "acme"
NAMESPACE = "cell-acme"
OPTIONAL = ("tasks", "crm", "documents", "finance")
ALWAYS = ("identity", "permissions", "notifications")
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion; gRPC probes are GA in 1.27)
# and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.27.0", "1.37.0")

EXTERNAL = {
    "postgres": {"existingSecret": "acme-datastores"},
    "redis": {"existingSecret": "acme-datastores"},
    "rabbitmq": {"existingSecret": "acme-datastores"},
}
IN_CLUSTER = {store: {"inCluster": {"enabled": True}} for store in ("postgres", "redis", "rabbitmq")}


def modules(*enabled: str) -> dict[str, Any]:
    return {"modules": {m: {"enabled": m in enabled} for m in OPTIONAL}}


def merge(*parts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
    return out


# Module combinations (and settings) every check runs against.
COMBINATIONS: dict[str, dict[str, Any]] = {
    "core-only": merge(EXTERNAL, modules()),
    "default-tasks": merge(EXTERNAL, modules("tasks")),
    "all-modules": merge(
        EXTERNAL,
        modules(*OPTIONAL),
        {
            "gateway": {"ingress": {"enabled": True, "className": "nginx", "tls": {"secretName": "acme-tls"}}},
            "secrets": {"existingSecret": "acme-secrets"},
            "networkPolicy": {
                "gatewayFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
                "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
                "datastoresTo": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
            },
        },
    ),
    "crm-finance-in-cluster": merge(
        IN_CLUSTER,
        modules("crm", "finance"),
        {"serviceDefaults": {"autoscaling": {"enabled": False}, "replicas": 1}},
    ),
    "documents-no-pdb": merge(
        EXTERNAL,
        modules("documents"),
        {"services": {"documents": {"pdb": {"enabled": False}, "autoscaling": {"enabled": False}, "replicas": 3}}},
    ),
}


def render(values: dict[str, Any], *, upgrade: bool = False) -> dict[str, str]:
    chart = helm.Chart.load(str(CHART))
    chart.validate_schema(values)
    return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=not upgrade, is_upgrade=upgrade)


def objects(manifests: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object of a render (NOTES.txt excluded)."""
    out = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                out.append(doc)
    return out


def of_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def component(obj: dict[str, Any]) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


@pytest.fixture(scope="session", params=sorted(COMBINATIONS))
def combo(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """(name, values, rendered objects) of each module combination."""
    values = COMBINATIONS[request.param]
    return request.param, values, objects(render(values))
