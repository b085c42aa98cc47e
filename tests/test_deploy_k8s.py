"""The Kubernetes manifests in deploy/k8s: they parse, are valid Kubernetes objects (read into the
kubernetes client's models, nothing is dropped), and the retraining CronJob runs `speechpipe run`
on spans discovered under its volume, one run at a time, with resource requests and limits, as
the image's non-root user, with the service account, config map and volume the manifests define."""

import json
import os
import shutil
import subprocess
from types import SimpleNamespace
from typing import Dict, List

import pytest
import yaml
from kubernetes.client import ApiClient

from speechpipe.pipeline.schedules import check_cron

K8S = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy", "k8s")
MODELS = {
    "CronJob": "V1CronJob",
    "ServiceAccount": "V1ServiceAccount",
    "ConfigMap": "V1ConfigMap",
    "PersistentVolumeClaim": "V1PersistentVolumeClaim",
    "Namespace": "V1Namespace",
}
IMAGE_USER = 10001  # deploy/Dockerfile's USER


def _documents() -> List[Dict]:
    found = []
    for name in sorted(os.listdir(K8S)):
        if name.endswith(".yaml") and name != "kustomization.yaml":
            with open(os.path.join(K8S, name), encoding="utf-8") as f:
                found += [dict(d, _file=name) for d in yaml.safe_load_all(f) if d]
    return found


def _by_kind(kind: str) -> List[Dict]:
    return [d for d in _documents() if d["kind"] == kind]


def _model(document: Dict):
    """The document read by the kubernetes client, as from an API server's response."""
    body = {k: v for k, v in document.items() if k != "_file"}
    return ApiClient().deserialize(SimpleNamespace(data=json.dumps(body)), MODELS[document["kind"]])


@pytest.mark.parametrize("document", _documents(), ids=lambda d: f"{d['_file']}:{d['kind']}")
def test_every_manifest_is_a_valid_kubernetes_object(document):
    obj = _model(document)
    # A misspelt or misplaced field would be dropped on the way in: the object must write back
    # exactly what the file says.
    body = {k: v for k, v in document.items() if k != "_file"}
    assert ApiClient().sanitize_for_serialization(obj) == body
    if document["kind"] != "Namespace":
        assert obj.metadata.namespace == "speechpipe"


def test_the_retraining_cronjob():
    (cronjob,) = [_model(d) for d in _by_kind("CronJob")]
    spec = cronjob.spec
    check_cron(spec.schedule)
    assert spec.concurrency_policy == "Forbid"  # two runs would share the home and its SQLite metadata
    assert spec.time_zone == "Etc/UTC"
    pod = spec.job_template.spec.template.spec
    assert pod.restart_policy == "Never"

    (account,) = _by_kind("ServiceAccount")
    assert pod.service_account_name == account["metadata"]["name"]
    assert pod.security_context.run_as_non_root and pod.security_context.run_as_user == IMAGE_USER

    (container,) = pod.containers
    requests, limits = container.resources.requests, container.resources.limits
    for resource in ("cpu", "memory", "nvidia.com/gpu"):
        assert requests[resource] == limits[resource], resource  # GPUs must, CPU and memory should
    assert int(limits["nvidia.com/gpu"]) >= 1
    assert container.security_context.allow_privilege_escalation is False

    (config_map,) = _by_kind("ConfigMap")
    assert [e.config_map_ref.name for e in container.env_from] == [config_map["metadata"]["name"]]
    assert config_map["data"]["MLFLOW_TRACKING_URI"].startswith("http")

    (claim,) = _by_kind("PersistentVolumeClaim")
    volumes = {v.name: v for v in pod.volumes}
    mounts = {m.name: m.mount_path for m in container.volume_mounts}
    assert volumes["home"].persistent_volume_claim.claim_name == claim["metadata"]["name"]
    assert volumes["dshm"].empty_dir.medium == "Memory" and mounts["dshm"] == "/dev/shm"

    # `speechpipe run` with its home and spans on the claim.
    assert container.command == ["speechpipe", "run"]
    args = container.args
    home, spans = args[args.index("--home") + 1], args[args.index("--spans-from") + 1]
    for path in (home, spans):
        assert path.startswith(mounts["home"] + "/")


def test_the_cronjob_command_is_a_speechpipe_run_command_line():
    from speechpipe.pipeline import local_runner

    (cronjob,) = _by_kind("CronJob")
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    known, unknown = local_runner.build_parser().parse_known_args(container["args"])
    assert unknown == []
    assert known.spans_from == "/var/speechpipe/spans" and known.span_marker == "_SUCCESS"


def test_the_kustomization_lists_every_manifest_and_sets_the_image():
    with open(os.path.join(K8S, "kustomization.yaml"), encoding="utf-8") as f:
        kustomization = yaml.safe_load(f)
    files = sorted(n for n in os.listdir(K8S) if n.endswith(".yaml") and n != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files
    (image,) = kustomization["images"]
    (cronjob,) = _by_kind("CronJob")
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == image["name"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_builds_the_manifests():
    built = subprocess.run(["kubectl", "kustomize", K8S], check=True, capture_output=True, text=True).stdout
    documents = list(yaml.safe_load_all(built))
    assert sorted(d["kind"] for d in documents) == sorted(d["kind"] for d in _documents())
    (cronjob,) = [d for d in documents if d["kind"] == "CronJob"]
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "REGISTRY/speechpipe:latest"
