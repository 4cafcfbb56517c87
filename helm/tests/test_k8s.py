"""`k8s/`: the kustomize base (rendered from the chart, so the two never drift), the development
data stores and the development overlay."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

from conftest import KUBE_VERSIONS, ROOT, objects

import helm_python as helm

K8S = ROOT / "k8s"
BASE = K8S / "base" / "trellis.yaml"
# The base is the chart rendered for a release named "trellis" with the default modules, external
# data stores and Secrets the user provides (trellis-secrets, trellis-datastores).
BASE_VALUES = {
    "secrets": {"existingSecret": "trellis-secrets"},
    "postgres": {"existingSecret": "trellis-datastores"},
    "redis": {"existingSecret": "trellis-datastores"},
    "rabbitmq": {"existingSecret": "trellis-datastores"},
}
KIND_ORDER = ["ServiceAccount", "Service", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Job", "NetworkPolicy"]
HEADER = """\
# GENERATED from helm/trellis by `cargo xtask chart --bless`; do not edit by hand.
# The chart with its default values (modules: tasks), release name "trellis", external data
# stores, and the Secrets trellis-secrets and trellis-datastores provided by the overlay.
# Without Helm's hooks the migration Job runs beside the services, which retry until the schema
# exists; delete the finished Job before applying a new image (Jobs are immutable).
"""


def render_base() -> str:
    chart = helm.Chart.load(str(ROOT / "helm" / "trellis"))
    objs = objects(chart.render(BASE_VALUES, name="trellis", namespace="default", is_install=True))
    out = []
    for obj in objs:
        annotations = obj["metadata"].get("annotations", {})
        if annotations.get("helm.sh/hook") == "test":
            continue
        annotations = {k: v for k, v in annotations.items() if not k.startswith("helm.sh/")}
        if annotations:
            obj["metadata"]["annotations"] = annotations
        else:
            obj["metadata"].pop("annotations", None)
        for labels in _label_maps(obj):
            labels.pop("helm.sh/chart", None)
            if "app.kubernetes.io/managed-by" in labels:
                labels["app.kubernetes.io/managed-by"] = "kustomize"
        out.append(obj)
    out.sort(key=lambda o: (KIND_ORDER.index(o["kind"]), o["metadata"]["name"]))
    return HEADER + "".join("---\n" + yaml.safe_dump(o, sort_keys=False, width=120) for o in out)


def _label_maps(obj: dict) -> list[dict]:
    maps = [obj["metadata"].setdefault("labels", {})]
    template = obj.get("spec", {}).get("template", {})
    if "labels" in template.get("metadata", {}):
        maps.append(template["metadata"]["labels"])
    return maps


def test_the_kustomize_base_is_the_rendered_chart() -> None:
    rendered = render_base()
    if os.environ.get("TRELLIS_CHART_BLESS"):
        BASE.write_text(rendered)
    assert BASE.exists(), "k8s/base/trellis.yaml is missing: run `cargo xtask chart --bless`"
    assert BASE.read_text() == rendered, "k8s/base/trellis.yaml is stale: run `cargo xtask chart --bless`"


def kustomizations() -> list[pathlib.Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


@pytest.mark.parametrize("path", kustomizations(), ids=lambda p: str(p.relative_to(ROOT)))
def test_kustomization_resources_exist(path: pathlib.Path) -> None:
    k = yaml.safe_load(path.read_text())
    assert k["kind"] == "Kustomization"
    for resource in k.get("resources", []):
        target = path.parent / resource
        assert target.exists(), f"{path}: {resource} does not exist"
        if target.is_dir():
            assert (target / "kustomization.yaml").exists(), f"{path}: {resource} has no kustomization.yaml"


def manifest_files() -> list[pathlib.Path]:
    files = []
    for k in kustomizations():
        for resource in yaml.safe_load(k.read_text()).get("resources", []):
            target = k.parent / resource
            if target.is_file():
                files.append(target)
    return sorted(set(files))


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(ROOT)))
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_k8s_manifests_match_the_kubernetes_schemas(path: pathlib.Path, kube_version: str) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{path}: {doc['kind']}/{doc['metadata']['name']}: {e.message}")


def test_the_dev_overlay_builds_and_provides_every_secret_it_references() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed; the overlay build is not checked")
    built = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / "dev")], capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    docs = [d for d in yaml.safe_load_all(built.stdout) if d]
    secrets = {d["metadata"]["name"]: set(d.get("data", {})) for d in docs if d["kind"] == "Secret"}
    for doc in docs:
        assert doc["metadata"].get("namespace") == "trellis-dev", doc["metadata"]["name"]
        kubernetes_validate.validate(doc, KUBE_VERSIONS[-1], strict=True)
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []):
            if container["image"].startswith("trellis"):
                assert container["image"] == "trellis:dev"
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets.get(ref["name"], set()), f"{doc['metadata']['name']}: {ref} is not provided"
