"""deploy/kubernetes, the kustomize base, checked offline: rendered here the way kustomize renders
this base (resources, namespace, images; nothing else is allowed in kustomization.yaml, so nothing
is left unrendered), then every document validated against the Kubernetes schemas that the
`kubernetes-validate` package ships (strict: unknown fields are errors), and what Veil needs of
them checked: every service deployed with probes, resources and the compose securityContext, the
Ingress routing each path to a process that serves it, secrets only by reference."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from veil.core.config import Settings
from veil.core.web.ops import OPS_ENDPOINTS
from veil.gateway.app import SERVICES

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes docs/deploy.md supports, and the newest the package knows.
VERSIONS = ("1.30", kubernetes_validate.latest_version())
RENDERED_KEYS = {"apiVersion", "kind", "namespace", "resources", "images"}
IMAGE_USER = 10001  # the Dockerfile's USER
SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|CREDENTIAL|DATABASE_URL", re.IGNORECASE)

Document = dict[str, Any]


def render(base: Path = BASE) -> list[Document]:
    """`kustomize build BASE` for the features this base uses."""
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - RENDERED_KEYS
    assert not unsupported, f"kustomization.yaml uses {unsupported}: render them here too"
    images = {image["name"]: image for image in kustomization.get("images", [])}
    documents: list[Document] = []
    for resource in kustomization["resources"]:
        documents += [doc for doc in yaml.safe_load_all((base / resource).read_text()) if doc]
    for doc in documents:
        if doc["kind"] != "Namespace" and "namespace" in kustomization:
            doc["metadata"]["namespace"] = kustomization["namespace"]
        for container in containers(doc):
            name, _, tag = container["image"].partition(":")
            if name in images:
                new = images[name]
                container["image"] = f"{new.get('newName', name)}:{new.get('newTag', tag)}"
    return documents


def pod_spec(doc: Document) -> Document | None:
    if doc["kind"] in ("Deployment", "Job"):
        spec: Document = doc["spec"]["template"]["spec"]
        return spec
    return None


def containers(doc: Document) -> list[Document]:
    spec = pod_spec(doc)
    return [] if spec is None else [*spec.get("initContainers", []), *spec["containers"]]


@pytest.fixture(scope="module")
def documents() -> list[Document]:
    return render()


def of_kind(documents: list[Document], kind: str) -> dict[str, Document]:
    return {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == kind}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.mark.parametrize("version", VERSIONS)
def test_every_document_is_valid_kubernetes(documents: list[Document], version: str) -> None:
    assert len(documents) >= 4 * len(SERVICES)
    for doc in documents:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} (Kubernetes {version}): {error.message}")


def test_the_validator_refuses_a_misspelt_field(documents: list[Document]) -> None:
    deployment = next(iter(of_kind(documents, "Deployment").values()))
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_every_service_is_deployed_with_probes_resources_and_the_compose_security(
    documents: list[Document],
) -> None:
    deployments = of_kind(documents, "Deployment")
    ops_paths = {endpoint.path for endpoint in OPS_ENDPOINTS}
    served = {}
    for name, deployment in deployments.items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        assert args[:1] == ["serve"], name
        served[args[1]] = deployment
        port = int(args[args.index("--port") + 1])
        assert {"name": "http", "containerPort": port} in container["ports"], name

        readiness, liveness = container["readinessProbe"], container["livenessProbe"]
        assert readiness["httpGet"] == {"path": "/readyz", "port": "http"}, name
        # Liveness must not depend on the database: an outage would restart every pod.
        assert liveness["httpGet"] == {"path": "/livez", "port": "http"}, name
        assert {"/readyz", "/livez"} <= ops_paths

        resources = container["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys(), name  # the autoscaler needs cpu
        assert "memory" in resources["limits"], name
        assert_compose_security(deployment)
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > float(
            Settings.model_fields["shutdown_timeout_seconds"].default
        )
    assert served.keys() == SERVICES.keys()

    services = of_kind(documents, "Service")
    autoscalers = of_kind(documents, "HorizontalPodAutoscaler")
    budgets = of_kind(documents, "PodDisruptionBudget")
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert matches(deployment["spec"]["selector"]["matchLabels"], labels), name
        (service,) = [s for s in services.values() if matches(s["spec"]["selector"], labels)]
        assert [port["targetPort"] for port in service["spec"]["ports"]] == ["http"], name
        (autoscaler,) = [a for a in autoscalers.values() if a["spec"]["scaleTargetRef"]["name"] == name]
        assert autoscaler["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        assert [m["resource"]["name"] for m in autoscaler["spec"]["metrics"]] == ["cpu"], name
        assert autoscaler["spec"]["minReplicas"] >= 2, f"{name}: one pod is no availability"
        (budget,) = [b for b in budgets.values() if matches(b["spec"]["selector"]["matchLabels"], labels)]
        assert budget["spec"].get("maxUnavailable") == 1 or budget["spec"].get("minAvailable") == 1, name


def assert_compose_security(workload: Document) -> None:
    """As compose runs the containers: non-root, read-only root file system, no capabilities, no
    privilege escalation; plus what the "restricted" Pod Security Standard asks."""
    name = workload["metadata"]["name"]
    pod = workload["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True, name
    assert pod["securityContext"]["runAsUser"] == IMAGE_USER, name
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
    assert pod["automountServiceAccountToken"] is False, name
    for container in containers(workload):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"]["drop"] == ["ALL"], name
        assert "add" not in context["capabilities"], name
        # A writable /tmp, as compose's tmpfs.
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        (tmp,) = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert "emptyDir" in volumes[tmp["name"]], name


def test_the_migration_job_runs_before_the_services_with_the_same_configuration(
    documents: list[Document],
) -> None:
    (job,) = of_kind(documents, "Job").values()
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["migrate", "up"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert_compose_security(job)
    deployment = next(iter(of_kind(documents, "Deployment").values()))
    (service_container,) = deployment["spec"]["template"]["spec"]["containers"]
    for field in ("image", "env", "envFrom", "volumeMounts"):
        assert container[field] == service_container[field], field


def test_secrets_are_referenced_never_stored(documents: list[Document]) -> None:
    assert not of_kind(documents, "Secret"), "Secret values do not belong in the repository"
    for config in of_kind(documents, "ConfigMap").values():
        stored = [key for key in config["data"] if SECRET_NAME.search(key) and not key.endswith("_FILE")]
        assert not stored, f"ConfigMap {config['metadata']['name']} holds secrets: {stored}"
    for doc in documents:
        for container in containers(doc):
            for variable in container.get("env", []):
                if SECRET_NAME.search(variable["name"]):
                    assert "value" not in variable, (doc["metadata"]["name"], variable["name"])
                    assert "secretKeyRef" in variable["valueFrom"], variable["name"]
    # And nothing that looks like key material anywhere in the base.
    for path in BASE.iterdir():
        assert "PRIVATE KEY" not in path.read_text(), path


def test_the_configuration_is_complete_for_production(
    documents: list[Document], monkeypatch: pytest.MonkeyPatch
) -> None:
    aliases = {
        str(alias)
        for field in Settings.model_fields.values()
        for alias in getattr(field.validation_alias, "choices", ())
    }
    for alias in aliases:  # only what the manifests hand over counts, not this shell's settings
        monkeypatch.delenv(alias, raising=False)
    (config,) = of_kind(documents, "ConfigMap").values()
    unknown = set(config["data"]) - aliases
    assert not unknown, f"not Veil settings (misspelt?): {sorted(unknown)}"

    deployment = next(iter(of_kind(documents, "Deployment").values()))
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    environment = dict(config["data"])
    for variable in container["env"]:
        reference = variable["valueFrom"]["secretKeyRef"]
        if not reference.get("optional"):
            environment[variable["name"]] = (
                "postgresql://veil:throwaway@db:5432/veil"
                if (variable["name"] == "DATABASE_URL")
                else "throwaway-" + reference["key"]
            )
    settings = Settings(VEIL_ENV="production", **environment)  # the image sets VEIL_ENV
    assert settings.is_production

    # The key files are the mounted Secret's.
    volumes = {volume["name"]: volume for volume in deployment["spec"]["template"]["spec"]["volumes"]}
    for variable in ("VEIL_JWT_KEYS_FILE", "VEIL_TRANSPARENCY_KEYS_FILE"):
        path = Path(environment[variable])
        (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == path.parent]
        assert "secret" in volumes[mount["name"]], variable


def ingress_route(ingress: Document, path: str) -> str | None:
    """The backend Service an Ingress sends `path` to: an Exact match, else the longest Prefix
    match by whole path elements (Kubernetes' rules)."""
    best: tuple[int, str] | None = None
    for rule in ingress["spec"]["rules"]:
        for entry in rule["http"]["paths"]:
            pattern, service = entry["path"], entry["backend"]["service"]["name"]
            if entry["pathType"] == "Exact" and pattern == path:
                return str(service)
            prefix = pattern.rstrip("/")
            covers = entry["pathType"] == "Prefix" and (path == prefix or path.startswith(prefix + "/"))
            if covers and (best is None or len(prefix) > best[0]):
                best = (len(prefix), service)
    return best[1] if best else None


def test_the_ingress_routes_each_path_to_a_process_that_serves_it(documents: list[Document]) -> None:
    (ingress,) = of_kind(documents, "Ingress").values()
    services = of_kind(documents, "Service")
    serving_of = {}  # Service name -> the `veil serve` service behind it
    for deployment in of_kind(documents, "Deployment").values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        for name, kube_service in services.items():
            if matches(kube_service["spec"]["selector"], labels):
                serving_of[name] = container["args"][1]
    paths: dict[str, set[str]] = {"/v1/ws": {"messaging"}}
    for service, modules in SERVICES.items():
        for module in modules:
            for endpoint in module.endpoints:
                paths.setdefault(endpoint.path, set()).add(service)
    misrouted = {}
    for path, serving in paths.items():
        concrete = re.sub(r"{[^}]+}", "00000000-0000-0000-0000-000000000000", path)
        backend = ingress_route(ingress, concrete)
        if serving_of.get(backend or "") not in serving:
            misrouted[path] = (backend, sorted(serving))
    assert not misrouted, f"path -> (Ingress backend, served by): {misrouted}"
    for private in ("/metrics", "/"):
        assert ingress_route(ingress, private) is None, f"{private} must not be public"
    # TLS for every host the rules serve.
    hosts = {rule["host"] for rule in ingress["spec"]["rules"]}
    assert hosts <= {host for tls in ingress["spec"]["tls"] for host in tls["hosts"]}
    # The compose gateway's body cap, and its hour for idle WebSockets.
    template = (ROOT / "deploy" / "nginx" / "veil.conf.template").read_text()
    annotations = ingress["metadata"]["annotations"]
    cap = re.search(r"client_max_body_size\s+(\w+);", template)
    assert cap and annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == cap[1]
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600


def test_every_container_runs_the_image_the_kustomization_names(documents: list[Document]) -> None:
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    images = {container["image"] for doc in documents for container in containers(doc)}
    assert images == {f"{image['newName']}:{image['newTag']}"}
