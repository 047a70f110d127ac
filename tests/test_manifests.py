"""The deployment files: k8s/ against Kubernetes' schemas and the Dask operator's CRDs, the
operator's Helm values against its chart, deploy/Dockerfile, and the flow options the jobs pass.

Every schema comes from an installed package, so these tests run offline: Kubernetes' JSON
schemas from kubernetes-validate, the operator's CRDs and chart defaults from the
dask-kubernetes wheel (the chart's own files, which it ships). Both are pinned in the test
extra; the chart version to install is the same as that dask-kubernetes version.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib.metadata
import re
import shlex
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from dask_kubernetes.constants import VALID_CLUSTER_NAME

from flows.region import parser

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
HELM_VALUES = ROOT / "deploy" / "helm-values.yaml"
MANIFESTS = sorted((ROOT / "k8s").rglob("*.yaml"))
#: Checked against an older release on purpose: no field newer than it is used, so the
#: manifests apply to any cluster from this release on.
KUBERNETES_VERSION = "1.30"
DASK_API = "kubernetes.dask.org/v1"
CHART = "dask_kubernetes/operator/deployment/helm/dask-kubernetes-operator"
FLOW = ["python", "-m", "flows.region"]


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


DOCUMENTS = [(path, doc) for path in MANIFESTS for doc in _documents(path)]
DASK_DOCUMENTS = [doc for _, doc in DOCUMENTS if doc["apiVersion"] == DASK_API]
JOBS = [doc for doc in DASK_DOCUMENTS if doc["kind"] == "DaskJob"]


def _name(doc: dict[str, Any]) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


# --- schemas -------------------------------------------------------------------------------


def _chart_file(name: str) -> Path:
    """A file of the operator's Helm chart, as shipped in the dask-kubernetes wheel."""
    path = importlib.metadata.distribution("dask-kubernetes").locate_file(f"{CHART}/{name}")
    return Path(str(path))


@cache
def crd_schema(kind: str) -> dict[str, Any]:
    """The v1 openAPIV3Schema of the operator's CRD for ``kind``, as a strict JSON schema."""
    crd = yaml.load(_chart_file(f"crds/{kind.lower()}.yaml").read_text(), Loader=yaml.CSafeLoader)
    assert crd["spec"]["names"]["kind"] == kind
    (version,) = (v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return _json_schema(version["schema"]["openAPIV3Schema"])


def _json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI v3 schema as JSON Schema: ``nullable`` becomes a null type, and an object with
    declared properties refuses others, as the API server does with strict field validation
    (kubectl's default) instead of silently dropping a misspelt field."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: _json_schema(v) for k, v in out["properties"].items()}
        if "additionalProperties" not in out and not out.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _json_schema(out[key])
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def check_kubernetes(doc: dict[str, Any]) -> None:
    """Validate a core Kubernetes object against Kubernetes' own schema, unknown fields refused."""
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def check_pod_spec(spec: dict[str, Any]) -> None:
    """Validate a pod spec embedded in an operator resource against Kubernetes' PodSpec."""
    check_kubernetes({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": spec})


def embedded_pods(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pod specs an operator resource carries, by role."""
    if doc["kind"] == "DaskWorkerGroup":
        return {"worker": doc["spec"]["worker"]["spec"]}
    cluster = doc["spec"]["cluster"]["spec"]
    return {
        "job": doc["spec"]["job"]["spec"],
        "scheduler": cluster["scheduler"]["spec"],
        "worker": cluster["worker"]["spec"],
    }


def check_dask(doc: dict[str, Any]) -> None:
    """Validate an operator resource: its body against the CRD, its metadata against
    Kubernetes' ObjectMeta, and every pod spec (and the scheduler's service) it carries
    against Kubernetes' own schemas, which are newer and stricter than the CRD's copy."""
    body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
    jsonschema.Draft202012Validator(crd_schema(doc["kind"])).validate(body)
    check_kubernetes({"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc["metadata"]})
    for spec in embedded_pods(doc).values():
        check_pod_spec(spec)
    if doc["kind"] == "DaskJob":
        service = doc["spec"]["cluster"]["spec"]["scheduler"]["service"]
        check_kubernetes(
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": service}
        )


def check(doc: dict[str, Any]) -> None:
    if doc["apiVersion"] == DASK_API:
        check_dask(doc)
    else:
        check_kubernetes(doc)


@pytest.mark.parametrize(
    "doc",
    [doc for _, doc in DOCUMENTS],
    ids=[f"{path.relative_to(ROOT)}:{_name(doc)}" for path, doc in DOCUMENTS],
)
def test_manifest_is_valid(doc: dict[str, Any]) -> None:
    check(doc)


def test_every_kind_is_covered() -> None:
    """The manifests hold what the docs promise, so an emptied folder cannot pass."""
    kinds = {doc["kind"] for _, doc in DOCUMENTS}
    assert {
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "Secret",
        "DaskJob",
        "DaskWorkerGroup",
    } <= kinds


def _gpu_job() -> dict[str, Any]:
    (job,) = (doc for doc in JOBS if doc["metadata"]["name"] == "s2sr-europe-gpu")
    return copy.deepcopy(job)


def _set(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``doc`` with the item at ``path`` set to ``value`` (or removed for None); the path's
    parts are separated by spaces, since resource names hold dots."""
    *parents, last = [int(p) if p.isdigit() else p for p in path.split()]
    node = doc
    for key in parents:
        node = node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return doc


BROKEN_JOBS = {
    "worker replicas as text": ("spec cluster spec worker replicas", "eight"),
    "no scheduler service": ("spec cluster spec scheduler service", None),
    "misspelt field in the runner pod": ("spec job spec restartPolcy", "Never"),
    "GPU count as a bare number": (
        "spec cluster spec worker spec containers 0 resources limits nvidia.com/gpu",
        1,
    ),
}


@pytest.mark.parametrize("mutation", BROKEN_JOBS.values(), ids=list(BROKEN_JOBS))
def test_broken_job_is_rejected(mutation: tuple[str, Any]) -> None:
    broken = _set(_gpu_job(), *mutation)
    with pytest.raises(jsonschema.ValidationError):
        check(broken)


BROKEN_PODS = {
    "env without a name": ("containers 0 env 0 name", None),
    "security context as a list": ("securityContext", []),
}


@pytest.mark.parametrize("mutation", BROKEN_PODS.values(), ids=list(BROKEN_PODS))
def test_broken_pod_spec_is_rejected(mutation: tuple[str, Any]) -> None:
    """The PodSpec check on its own rejects what Kubernetes would."""
    broken = _set(embedded_pods(_gpu_job())["job"], *mutation)
    with pytest.raises(jsonschema.ValidationError):
        check_pod_spec(broken)


def test_broken_secret_is_rejected() -> None:
    (secret,) = (copy.deepcopy(doc) for _, doc in DOCUMENTS if doc["kind"] == "Secret")
    secret["stringData"]["AWS_ACCESS_KEY_ID"] = ["not", "a", "string"]
    with pytest.raises(jsonschema.ValidationError):
        check(secret)


# --- the manifests agree with each other ---------------------------------------------------


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return pod.get("initContainers", []) + pod["containers"]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _option(args: list[str], name: str, default: str | None = None) -> str | None:
    """The value of ``--name=value`` in a container's args."""
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"--{name}=")]
    return values[-1] if values else default


@pytest.mark.parametrize("job", JOBS, ids=_name)
def test_job_parts_agree(job: dict[str, Any]) -> None:
    """The runner waits at the scheduler's Service for as many Dask workers as the job starts,
    the Service selects the job's scheduler, and the operator accepts the job's name."""
    name = job["metadata"]["name"]
    assert VALID_CLUSTER_NAME.match(name)
    cluster = job["spec"]["cluster"]["spec"]
    assert cluster["scheduler"]["service"]["selector"] == {
        "dask.org/cluster-name": name,
        "dask.org/component": "scheduler",
    }
    (wait,) = job["spec"]["job"]["spec"]["initContainers"]
    env = _env(wait)
    assert env["DASK_SCHEDULER_ADDRESS"]["value"] == f"tcp://{name}-scheduler:8786"
    (worker,) = cluster["worker"]["spec"]["containers"]
    processes = int(_option(worker["args"], "nworkers", "1"))
    assert int(env["WORKERS"]["value"]) == cluster["worker"]["replicas"] * processes


def _clusters() -> dict[str, list[dict[str, Any]]]:
    """Every pod spec of each Dask cluster: its job's, and its extra worker groups'."""
    clusters: dict[str, list[dict[str, Any]]] = {}
    for doc in DASK_DOCUMENTS:
        name = doc["metadata"]["name"] if doc["kind"] == "DaskJob" else doc["spec"]["cluster"]
        clusters.setdefault(name, []).extend(embedded_pods(doc).values())
    return clusters


@pytest.mark.parametrize("cluster", sorted(_clusters()))
def test_cluster_runs_one_image(cluster: str) -> None:
    """Runner, scheduler and workers of one cluster run the same image: Dask needs the same
    versions on all three; and a worker group belongs to a cluster a job makes."""
    assert cluster in {job["metadata"]["name"] for job in JOBS}
    images = {c["image"] for pod in _clusters()[cluster] for c in _containers(pod)}
    assert len(images) == 1, images


def test_secret_references_exist() -> None:
    secrets = {
        doc["metadata"]["name"]: set(doc.get("stringData", {})) | set(doc.get("data", {}))
        for _, doc in DOCUMENTS
        if doc["kind"] == "Secret"
    }
    pods = [pod for doc in DASK_DOCUMENTS for pod in embedded_pods(doc).values()]
    refs = [
        e["valueFrom"]["secretKeyRef"]
        for pod in pods
        for c in _containers(pod)
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    ]
    assert refs
    for ref in refs:
        assert ref["key"] in secrets[ref["name"]], ref


def test_s3_clients_get_their_region() -> None:
    """Every container that holds S3 credentials names the region as botocore (s3fs) reads
    it, ``AWS_DEFAULT_REGION`` (GDAL reads it too); ``AWS_REGION`` alone is lost on s3fs."""
    pods = [pod for doc in DASK_DOCUMENTS for pod in embedded_pods(doc).values()]
    with_keys = [
        _env(c) for pod in pods for c in _containers(pod) if "AWS_ACCESS_KEY_ID" in _env(c)
    ]
    assert with_keys
    for env in with_keys:
        assert env.get("AWS_DEFAULT_REGION", {}).get("value"), sorted(env)
        assert "AWS_REGION" not in env


def test_gpu_workers_claim_a_gpu() -> None:
    """Every ``dask cuda worker`` asks Kubernetes for one GPU and offers Dask the ``GPU``
    resource that the flow's model tasks claim; no other container asks for a GPU."""
    pods = [pod for doc in DASK_DOCUMENTS for pod in embedded_pods(doc).values()]
    gpu_workers = 0
    for container in (c for pod in pods for c in _containers(pod)):
        limits = container.get("resources", {}).get("limits", {})
        if container["args"][:3] == ["dask", "cuda", "worker"]:
            gpu_workers += 1
            assert limits.get("nvidia.com/gpu") == "1"
            assert "--resources=GPU=1" in container["args"]
        else:
            assert "nvidia.com/gpu" not in limits
    assert gpu_workers


# --- the flow's options --------------------------------------------------------------------


FLOW_ARGS = [
    pytest.param(doc["metadata"]["name"], c["args"][len(FLOW) :], id=f"{_name(doc)}:{c['name']}")
    for doc in JOBS
    for c in _containers(embedded_pods(doc)["job"])
    if c["args"][:3] == FLOW
]


@pytest.mark.parametrize(("job", "args"), FLOW_ARGS)
def test_flow_accepts_job_options(job: str, args: list[str]) -> None:
    """The runner's arguments as Kubernetes hands them over: ``$(VAR)`` expanded, here with
    the scheduler address the Dask operator gives a job's runner."""
    address = f"tcp://{job}-scheduler:8786"
    expanded = [a.replace("$(DASK_SCHEDULER_ADDRESS)", address) for a in args]
    assert expanded != args, "the runner no longer takes the operator's scheduler"
    options = parser().parse_args(expanded)
    assert options.scheduler == address
    aoi = ROOT / options.aoi
    assert aoi.is_file(), f"{options.aoi} is not in the repository, so not in the image"
    assert any(aoi.is_relative_to(ROOT / src) for src in _copied()), options.aoi


def test_flow_refuses_unknown_option() -> None:
    """The check above can fail: an option the flow does not have ends the parse."""
    (_, args) = FLOW_ARGS[0].values
    with pytest.raises(SystemExit):
        parser().parse_args([*args, "--tiles-per-worker=4"])


# --- Helm values ---------------------------------------------------------------------------


def _values() -> dict[str, Any]:
    return yaml.safe_load(HELM_VALUES.read_text())


def _chart_defaults() -> dict[str, Any]:
    return yaml.safe_load(_chart_file("values.yaml").read_text())


def unknown_values(ours: Any, chart: Any, where: str = "") -> list[str]:
    """Keys of ``ours`` the chart does not have, or whose kind (map, list, scalar) differs from
    the chart's default. Maps the chart leaves empty are free-form (annotations, selectors)."""
    if chart is None:
        return []
    if isinstance(chart, dict):
        if not isinstance(ours, dict):
            return [f"{where}: a map in the chart"]
        if not chart:
            return []
        return [
            problem
            for key, value in ours.items()
            for problem in (
                unknown_values(value, chart[key], f"{where}.{key}")
                if key in chart
                else [f"{where}.{key}: not in the chart"]
            )
        ]
    if isinstance(chart, list) != isinstance(ours, list) or isinstance(ours, dict):
        return [f"{where}: {type(chart).__name__} in the chart"]
    return []


def test_helm_values_are_chart_values() -> None:
    """The chart publishes no values.schema.json, so the values are checked against the keys
    and kinds of the chart's own values.yaml (Helm ignores unknown keys silently)."""
    assert unknown_values(_values(), _chart_defaults()) == []


@pytest.mark.parametrize(
    "broken",
    [{"rbac": {"clusterWide": True}}, {"kopfArgs": "--all"}],
    ids=["unknown key", "string for a list"],
)
def test_helm_values_reject_strays(broken: dict[str, Any]) -> None:
    assert unknown_values({**_values(), **broken}, _chart_defaults())


def _merged(defaults: Any, ours: Any) -> Any:
    """Helm's merge of user values over chart defaults: maps merge, anything else replaces."""
    if isinstance(defaults, dict) and isinstance(ours, dict):
        return {**defaults, **{k: _merged(defaults.get(k), v) for k, v in ours.items()}}
    return ours


def test_helm_values_make_a_valid_operator_pod() -> None:
    """The values the chart's deployment template copies into the operator's pod, placed as the
    template places them, make a pod that Kubernetes accepts."""
    values = _merged(_chart_defaults(), _values())
    spec = {
        "securityContext": values["podSecurityContext"],
        "containers": [
            {
                "name": "operator",
                "image": "operator",
                "securityContext": values["securityContext"],
                "env": values["extraEnv"],
                "resources": values["resources"],
                "volumeMounts": values["volumeMounts"],
            }
        ],
        "volumes": values["volumes"],
        "nodeSelector": values["nodeSelector"],
        "tolerations": values["tolerations"],
        "affinity": values["affinity"],
    }
    check_pod_spec(spec)


# --- Dockerfile ----------------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments out."""
    text = re.sub(r"\\\n(\s*#[^\n]*\n)*", " ", DOCKERFILE.read_text())
    lines = (line.strip() for line in text.splitlines())
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for parts in (line.split(None, 1) for line in lines if line and line[0] != "#")
    ]


def _copied() -> list[str]:
    """The build-context paths the Dockerfile copies."""
    return [
        src
        for op, args in _instructions()
        if op in ("COPY", "ADD")
        for src in shlex.split(args)[:-1]
        if not src.startswith("--")
    ]


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context: the last pattern that
    matches the path or a folder above it decides (Docker's rule, for the patterns we use)."""
    parts = PurePosixPath(path).parts
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        keep = pattern.startswith("!")
        if any(fnmatch.fnmatchcase(p, pattern.lstrip("!").strip("/")) for p in prefixes):
            ignored = not keep
    return ignored


def test_dockerfile_copies_what_exists() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = _copied()
    assert {"pyproject.toml", "pipeline", "flows"} <= set(sources)
    for src in sources:
        assert (ROOT / src).exists(), src
        assert not _ignored(src, patterns), f"{src} is excluded by .dockerignore"
    assert _ignored(".venv", patterns)


def test_dockerfile_runs_as_non_root() -> None:
    """The last USER is a non-zero uid: numeric, so Kubernetes' runAsNonRoot can verify it."""
    users = [args for op, args in _instructions() if op == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*", users[-1].split(":")[0]), users


def test_dockerfile_bakes_in_no_secrets() -> None:
    """No ENV or ARG that looks like a credential: those come from a Secret at run time."""
    names = [
        re.split(r"[=\s]", args, maxsplit=1)[0]
        for op, args in _instructions()
        if op in ("ENV", "ARG")
    ]
    names += [m for op, args in _instructions() if op == "ENV" for m in re.findall(r"(\w+)=", args)]
    assert not [n for n in names if re.search(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", n, re.I)]
    ops = [op for op, _ in _instructions()]
    assert "ENTRYPOINT" in ops and "CMD" in ops
