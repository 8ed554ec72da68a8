"""deploy/: Prefect deployments point at real flows with matching parameters; the KubeRay manifest
and the container recipe name the image and the resources."""

from __future__ import annotations

import functools
import importlib.util
import inspect
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _prefect_yaml() -> dict:
    return yaml.safe_load((DEPLOY / "prefect.yaml").read_text())


def _load_flow(entrypoint: str):
    path, func = entrypoint.split(":")
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, func)


@pytest.mark.parametrize("deployment", _prefect_yaml()["deployments"], ids=lambda d: d["name"])
def test_deployment_entrypoint_imports_and_parameters_match(deployment):
    from prefect import Flow
    from prefect.client.schemas.schedules import CronSchedule

    flow = _load_flow(deployment["entrypoint"])
    assert isinstance(flow, Flow)
    signature = inspect.signature(flow.fn)
    unknown = set(deployment.get("parameters", {})) - set(signature.parameters)
    assert not unknown, f"parameters not in {flow.name}'s signature: {unknown}"
    required = {n for n, p in signature.parameters.items() if p.default is inspect.Parameter.empty}
    assert required <= set(deployment.get("parameters", {}))
    for schedule in deployment.get("schedules", []):
        CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))
    assert deployment["work_pool"]["job_variables"]["image"].startswith("ghcr.io/")


def test_nightly_scan_runs_nightly():
    nightly = next(d for d in _prefect_yaml()["deployments"] if d["name"] == "nightly-scan")
    assert nightly["schedules"][0]["cron"] == "0 2 * * *"
    assert {"store"} <= set(nightly["parameters"]) and ({"hub_org", "registry"} & set(nightly["parameters"]))


def _images(manifest: dict) -> list[tuple[str, dict]]:
    groups = [manifest["spec"]["headGroupSpec"]] + manifest["spec"]["workerGroupSpecs"]
    return [(c["image"], c["resources"]) for g in groups for c in g["template"]["spec"]["containers"]]


def test_raycluster_manifest_names_image_and_resources():
    import ray

    manifest = yaml.safe_load((DEPLOY / "raycluster.yaml").read_text())
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayCluster"
    assert manifest["spec"]["rayVersion"] == ray.__version__
    image = _prefect_yaml()["deployments"][0]["work_pool"]["job_variables"]["image"]
    repo = image.rsplit(":", 1)[0]
    for img, resources in _images(manifest):
        assert img.startswith(repo + ":"), img
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[kind])
    groups = {g["groupName"]: g for g in manifest["spec"]["workerGroupSpecs"]}
    gpu = groups["gpu-probes"]["template"]["spec"]["containers"][0]["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == gpu["requests"]["nvidia.com/gpu"] == "1"
    cpu = groups["cpu-spectra"]["template"]["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in cpu["limits"]


def test_container_recipe_installs_the_project_with_the_pinned_torch():
    recipe = (DEPLOY / "Dockerfile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    torch_pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("torch"))
    assert re.search(r"^FROM python:3\.11", recipe, re.M)
    assert f'"{torch_pin}"' in recipe
    assert re.search(r"pip install \.", recipe)
    for folder in ("audit", "flows", "deploy"):
        assert f"COPY {folder} ./{folder}" in recipe


def test_github_actions_example_uses_real_scan_options():
    """The GitHub Actions example's scan line names only options `lora-audit scan` has, and uploads
    the SARIF file it writes."""
    import shlex

    import typer.main
    import yaml

    from audit.cli import app

    wf = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy" / "github-actions" / "lora-audit.yml")
                        .read_text())
    steps = wf["jobs"]["scan"]["steps"]
    line = next(s["run"] for s in steps if "run" in s and s["run"].startswith("lora-audit scan"))
    args = shlex.split(line)[2:]
    scan = typer.main.get_command(app).commands["scan"]
    known = {o for p in scan.params for o in (*p.opts, *p.secondary_opts)}
    assert {a for a in args if a.startswith("-")} <= known
    upload = next(s for s in steps if s.get("uses", "").startswith("github/codeql-action/upload-sarif"))
    assert upload["with"]["sarif_file"] == args[args.index("--output") + 1]


KUBERAY_CRD = ROOT / "tests" / "data" / "kuberay-v1.7.0-ray.io_rayclusters.yaml.gz"


def _strict(schema):
    """A Kubernetes structural schema made strict: the API server *prunes* fields a schema does not
    declare (a misspelt ``minReplica`` would vanish silently), so for the test every object that
    lists its ``properties`` and neither allows other keys nor preserves unknown fields rejects them."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    return schema


@functools.cache
def _raycluster_validator(version: str):
    import gzip

    import jsonschema

    crd = yaml.load(gzip.open(KUBERAY_CRD), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    assert crd["spec"]["names"]["kind"] == "RayCluster"
    served = {v["name"]: v for v in crd["spec"]["versions"]}
    schema = _strict(served[version]["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def test_raycluster_manifest_validates_against_the_kuberay_crd():
    """deploy/raycluster.yaml against the RayCluster CRD of KubeRay v1.7.0 (vendored), with unknown
    fields rejected rather than pruned."""
    manifest = yaml.safe_load((DEPLOY / "raycluster.yaml").read_text())
    group, version = manifest["apiVersion"].split("/")
    assert group == "ray.io"
    errors = sorted(_raycluster_validator(version).iter_errors(manifest), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


@pytest.mark.parametrize("mistake", ["misspelt field", "wrong type", "missing container name"])
def test_the_crd_check_catches_a_broken_manifest(mistake):
    manifest = yaml.safe_load((DEPLOY / "raycluster.yaml").read_text())
    worker = manifest["spec"]["workerGroupSpecs"][0]
    if mistake == "misspelt field":
        worker["minReplica"] = worker.pop("minReplicas")
    elif mistake == "wrong type":
        worker["replicas"] = "two"
    else:
        del worker["template"]["spec"]["containers"][0]["name"]
    assert list(_raycluster_validator("v1").iter_errors(manifest))
