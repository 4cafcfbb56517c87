"""The Tiltfile's contract with the chart and k8s/: its values render, and the workloads it names
exist under those names (Tilt fails late, on a cluster, when they do not)."""

from __future__ import annotations

import ast
import re

import pytest
import yaml

from conftest import OPTIONAL, ROOT, modules, merge, objects, of_kind

import helm_python as helm

TILTFILE = (ROOT / "Tiltfile").read_text()
VALUES = yaml.safe_load((ROOT / "k8s" / "tilt" / "values.yaml").read_text())


def tilt_render(enabled: list[str]) -> list[dict]:
    chart = helm.Chart.load(str(ROOT / "helm" / "trellis"))
    values = merge(VALUES, modules(*enabled))
    chart.validate_schema(values)
    return objects(chart.render(values, name="trellis", namespace="trellis-dev", is_install=True))


def test_the_tiltfile_parses_as_starlark() -> None:
    ast.parse(TILTFILE)  # Starlark is a subset of Python's grammar


@pytest.mark.parametrize("enabled", [["tasks"], [], list(OPTIONAL)], ids=["default", "core", "all"])
def test_the_workloads_the_tiltfile_names_exist(enabled: list[str]) -> None:
    names = {o["metadata"]["name"] for o in tilt_render(enabled)}
    assert "trellis-migrate" in names
    assert "trellis-test-gateway" in names  # filtered out by name
    assert "trellis-gateway" in names
    for svc in ["identity", "permissions", "notifications", *enabled]:
        assert f"trellis-{svc}" in names
    named = re.findall(r"k8s_resource\(\s*'([^']+)'\s*[,)]", TILTFILE)
    assert {"trellis-migrate", "trellis-gateway"} <= set(named)
    for name in named:
        assert name in names or name in {"postgres", "redis", "rabbitmq"}, name


def test_tilt_uses_the_dev_data_stores_and_stable_secrets() -> None:
    objs = tilt_render(["tasks"])
    assert not of_kind(objs, "StatefulSet"), "Tilt brings its data stores from k8s/dev"
    (secret,) = of_kind(objs, "Secret")
    assert set(secret["data"]) == {"CELL_SECRET", "IDENTITY_ENCRYPTION_KEY", "SERVICE_DB_PASSWORD"}
    # Fixed values: a reload of the Tiltfile must not change the identity encryption key.
    (again,) = of_kind(tilt_render(["tasks"]), "Secret")
    assert secret["data"] == again["data"]
    dev = [d for d in yaml.safe_load_all((ROOT / "k8s" / "dev" / "kustomization.yaml").read_text()) if d][0]
    provided = {lit.split("=", 1)[0] for gen in dev["secretGenerator"] for lit in gen["literals"]}
    assert {"DATABASE_URL", "REDIS_URL", "AMQP_URL"} <= provided
    for d in of_kind(objs, "Deployment"):
        assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "trellis:tilt"
    assert "port_forwards=['8080:8080'" in TILTFILE
    assert "kustomize('k8s/dev')" in TILTFILE and "'helm/trellis'" in TILTFILE
