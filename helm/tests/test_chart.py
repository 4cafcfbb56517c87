"""What matters in the rendered chart, for every module combination in conftest.COMBINATIONS."""

from __future__ import annotations

import helm_python as helm
import kubernetes_validate
import pytest

from conftest import (
    ALWAYS,
    CHART,
    COMBINATIONS,
    EXTERNAL,
    KUBE_VERSIONS,
    OPTIONAL,
    RELEASE,
    component,
    merge,
    modules,
    objects,
    of_kind,
    render,
)

HOOK = "helm.sh/hook"
WEIGHT = "helm.sh/hook-weight"


def enabled(values: dict) -> set[str]:
    return set(ALWAYS) | {m for m in OPTIONAL if values["modules"][m]["enabled"]}


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


# ---- lint and schemas -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(COMBINATIONS))
def test_chart_lints_clean_in_strict_mode(name: str) -> None:
    report = helm.lint(str(CHART), COMBINATIONS[name], strict=True, namespace="cell-acme", kube_version="v1.30.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert not problems, problems


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_every_rendered_object_matches_the_kubernetes_schemas(combo, kube_version: str) -> None:
    name, _, objs = combo
    assert objs, f"{name} rendered nothing"
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']} is invalid for Kubernetes {kube_version}: {e.message}")


@pytest.mark.parametrize(
    "bad",
    [
        {"modules": {"crm": {"enabled": "yes"}}},
        {"modules": {"billing": {"enabled": True}}},
        {"secrets": {"cellSecret": "too-short"}},
        {"secrets": {"identityEncryptionKey": "not base64 of 32 bytes"}},
        {"cell": {"publicBaseUrl": "cell.example.com"}},
        {"gateway": {"defaultDeadline": "30 seconds"}},
        {"serviceDefaults": {"autoscaling": {"targetCPUUtilizationPercentage": 150}}},
        {"replicas": 3},
    ],
    ids=lambda v: next(iter(v)),
)
def test_values_schema_rejects_bad_values(bad: dict) -> None:
    chart = helm.Chart.load(str(CHART))
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(merge(EXTERNAL, bad))


def test_external_stores_need_a_secret_name() -> None:
    with pytest.raises(helm.HelmError, match=r"(postgres|redis|rabbitmq)\.existingSecret is required"):
        render({})


# ---- modules --------------------------------------------------------------------------------


def test_disabled_modules_render_no_objects_and_the_gateway_omits_them(combo) -> None:
    name, values, objs = combo
    on = enabled(values)
    components = {component(o) for o in objs}
    for module in OPTIONAL:
        owned = [f"{o['kind']}/{o['metadata']['name']}" for o in objs if component(o) == module]
        if module in on:
            assert {"Deployment", "Service", "ServiceAccount"} <= {o.split("/")[0] for o in owned}, (name, module)
        else:
            assert not owned, f"{name}: disabled module {module} renders {owned}"
            assert not any(module in o["metadata"]["name"] for o in objs), (name, module)
    for module in (*ALWAYS, "gateway"):
        assert module in components, (name, module)

    (gateway,) = [d for d in of_kind(objs, "Deployment") if component(d) == "gateway"]
    env = env_of(gateway["spec"]["template"]["spec"]["containers"][0])
    assert set(env["TRELLIS_MODULES"]["value"].split(",")) == on
    urls = {k for k in env if k.startswith("TRELLIS_") and k.endswith("_GRPC_URL")}
    assert urls == {f"TRELLIS_{m.upper()}_GRPC_URL" for m in on}

    (job,) = of_kind(objs, "Job")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "migrate" and set(args[1:]) == on


def test_service_urls_point_at_the_cells_services(combo) -> None:
    _, values, objs = combo
    services = {s["metadata"]["name"]: s for s in of_kind(objs, "Service")}
    for deployment in of_kind(objs, "Deployment"):
        env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
        for module in enabled(values):
            url = env[f"TRELLIS_{module.upper()}_GRPC_URL"]["value"]
            host, port = url.removeprefix("http://").split(":")
            assert host in services, url
            assert int(port) in {p["port"] for p in services[host]["spec"]["ports"]}, url


def test_each_service_serves_its_own_module_on_its_fixed_port(combo) -> None:
    _, values, objs = combo
    ports = {m: 50061 + i for i, m in enumerate(["identity", "permissions", "tasks", "crm", "documents", "finance", "notifications"])}
    for deployment in of_kind(objs, "Deployment"):
        module = component(deployment)
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = env_of(container)
        assert env["BIND_HOST"]["value"] == "0.0.0.0"
        if module == "gateway":
            assert container["args"] == ["serve", "gateway"]
            assert env["GATEWAY_LISTEN"]["value"] == "0.0.0.0:8080"
            assert "DATABASE_URL" not in env and "SERVICE_DB_PASSWORD" not in env, "the gateway needs no database"
            continue
        assert container["args"] == ["serve", module]
        grpc = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert grpc["grpc"] == ports[module] and grpc["admin"] == ports[module] - 41000
        for var in ("DATABASE_URL", "SERVICE_DB_PASSWORD", "REDIS_URL", "AMQP_URL", "CELL_SECRET"):
            assert "secretKeyRef" in env[var]["valueFrom"], (module, var)
        assert ("IDENTITY_ENCRYPTION_KEY" in env) == (module == "identity")


# ---- workloads ------------------------------------------------------------------------------


def test_every_deployment_has_probes_resources_and_a_locked_down_security_context(combo) -> None:
    name, _, objs = combo
    deployments = of_kind(objs, "Deployment")
    assert deployments
    for d in deployments:
        where = f"{name}: {d['metadata']['name']}"
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] != 0, where
        assert pod["automountServiceAccountToken"] is False, where
        assert pod["serviceAccountName"] == d["metadata"]["name"], where
        for c in pod["containers"]:
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert probe in c, f"{where}: {probe} missing"
            if component(d) != "gateway":
                grpc_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
                for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                    assert c[probe]["grpc"]["port"] == grpc_port, f"{where}: {probe} is not a gRPC health probe"
            else:
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"], where
            assert c["resources"]["limits"]["memory"], where
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where


def test_every_deployment_has_a_service_account_pdb_and_hpa_as_configured(combo) -> None:
    name, values, objs = combo
    accounts = {o["metadata"]["name"] for o in of_kind(objs, "ServiceAccount")}
    pdbs = {o["metadata"]["name"]: o for o in of_kind(objs, "PodDisruptionBudget")}
    hpas = {o["spec"]["scaleTargetRef"]["name"]: o for o in of_kind(objs, "HorizontalPodAutoscaler")}
    for d in of_kind(objs, "Deployment"):
        n, module = d["metadata"]["name"], component(d)
        settings = merge(values.get("serviceDefaults", {}), values.get("services", {}).get(module, {}))
        autoscale = settings.get("autoscaling", {}).get("enabled", True)
        assert n in accounts
        assert (n in pdbs) == settings.get("pdb", {}).get("enabled", True), (name, n)
        if n in pdbs:
            assert pdbs[n]["spec"]["selector"]["matchLabels"] == d["spec"]["selector"]["matchLabels"]
        assert (n in hpas) == autoscale, (name, n)
        # With an HPA the Deployment leaves replicas to it, so upgrades do not reset the scale.
        assert ("replicas" in d["spec"]) == (not autoscale), (name, n)


def test_objects_carry_the_standard_labels(combo) -> None:
    _, _, objs = combo
    for o in objs:
        labels = o["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/component",
                    "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of", "helm.sh/chart"):
            assert key in labels, f"{o['kind']}/{o['metadata']['name']} lacks {key}"
        assert labels["app.kubernetes.io/instance"] == RELEASE


# ---- hooks ----------------------------------------------------------------------------------


def test_the_migration_job_runs_before_the_services(combo) -> None:
    name, values, objs = combo
    (job,) = of_kind(objs, "Job")
    hooks = set(job["metadata"]["annotations"][HOOK].split(","))
    assert hooks == {"pre-install", "pre-upgrade"}, name
    job_weight = int(job["metadata"]["annotations"][WEIGHT])
    # Deployments are ordinary release objects: Helm creates them only after every pre-* hook
    # has succeeded, so the new schema is in place before any new pod starts.
    for d in of_kind(objs, "Deployment"):
        assert HOOK not in d["metadata"]["annotations"], d["metadata"]["name"]
    # What the Job needs exists before it: Secrets the chart creates and in-cluster stores are
    # hooks with lower weights.
    for o in objs:
        if o["kind"] in ("Secret", "StatefulSet") or (o["kind"] == "Service" and component(o) in ("postgres", "redis", "rabbitmq")):
            assert "pre-install" in o["metadata"]["annotations"].get(HOOK, ""), o["metadata"]["name"]
            assert int(o["metadata"]["annotations"][WEIGHT]) < job_weight, o["metadata"]["name"]
    assert "hook-succeeded" in job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["activeDeadlineSeconds"] > 0


def test_helm_test_calls_readiness_and_a_rest_route(combo) -> None:
    _, values, objs = combo
    tests = [o for o in objs if o["metadata"]["annotations"].get(HOOK) == "test"]
    assert len(tests) == 1
    script = tests[0]["spec"]["containers"][0]["args"][0]
    assert "expect 200 /readyz" in script
    assert "expect 200 /.well-known/jwks.json" in script
    if values["modules"]["tasks"]["enabled"]:
        assert "expect 401 /api/v1/tasks" in script
    else:
        assert "expect 404 /api/v1/tasks MODULE_DISABLED" in script


# ---- network --------------------------------------------------------------------------------


def policies(objs: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"].removeprefix(f"{RELEASE}-trellis-"): o["spec"] for o in of_kind(objs, "NetworkPolicy")}


def test_network_policies_deny_by_default(combo) -> None:
    _, _, objs = combo
    p = policies(objs)
    deny = p["default-deny"]
    assert deny["podSelector"] == {}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert not deny.get("ingress") and not deny.get("egress")


def test_only_the_gateway_is_reachable_from_outside(combo) -> None:
    name, values, objs = combo
    p = policies(objs)
    # Rules that admit traffic from outside the release: no podSelector-only peer list.
    for pname, spec in p.items():
        for rule in spec.get("ingress", []):
            peers = rule.get("from")
            internal = peers and all(set(peer) == {"podSelector"} for peer in peers)
            if internal:
                continue
            if pname == "gateway-ingress":
                assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"
                assert [port["port"] for port in rule["ports"]] == [8080]
            elif pname == "metrics-ingress":
                assert all(port["port"] in range(9060, 9068) for port in rule["ports"]), name
            else:
                pytest.fail(f"{name}: policy {pname} admits traffic from outside the cell: {rule}")
    gateway_from = values.get("networkPolicy", {}).get("gatewayFrom")
    if gateway_from:
        assert p["gateway-ingress"]["ingress"][0]["from"] == gateway_from


def test_intra_cell_grpc_dns_and_data_stores_are_allowed(combo) -> None:
    _, values, objs = combo
    p = policies(objs)
    grpc_ports = {50061 + ["identity", "permissions", "tasks", "crm", "documents", "finance", "notifications"].index(m) for m in enabled(values)}
    intra = p["intra-cell"]
    assert {port["port"] for port in intra["ingress"][0]["ports"]} == grpc_ports | {8080}
    assert {port["port"] for port in intra["egress"][0]["ports"]} == grpc_ports | {8080}
    dns = p["allow-dns"]["egress"][0]
    assert {(port["protocol"], port["port"]) for port in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
    store_ports = {port["port"] for rule in p["datastores-egress"]["egress"] for port in rule["ports"]}
    assert {5432, 6379, 5672} <= store_ports
    for store in ("postgres", "redis", "rabbitmq"):
        if values.get(store, {}).get("inCluster", {}).get("enabled"):
            assert f"{store}-ingress" in p


def test_network_policies_can_be_turned_off() -> None:
    objs = objects(render(merge(EXTERNAL, modules("tasks"), {"networkPolicy": {"enabled": False}})))
    assert not of_kind(objs, "NetworkPolicy")


def test_generated_secrets_are_hooks_and_kept_out_of_existing_secret_cells() -> None:
    generated = objects(render(merge(EXTERNAL, modules())))
    (secret,) = of_kind(generated, "Secret")
    assert set(secret["data"]) == {"CELL_SECRET", "IDENTITY_ENCRYPTION_KEY", "SERVICE_DB_PASSWORD"}
    managed = objects(render(merge(EXTERNAL, modules(), {"secrets": {"existingSecret": "mine"}})))
    assert not of_kind(managed, "Secret")
    for d in of_kind(managed, "Deployment"):
        env = env_of(d["spec"]["template"]["spec"]["containers"][0])
        assert env["CELL_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "mine"
