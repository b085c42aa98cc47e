"""What a cluster gives each node of the pipeline: GPUs for the trainers and for nothing else,
CPU and memory.

TFX's KubeflowV2DagRunner takes a node's resources from its `platform_config`, a KFP
`PipelineContainerSpec.ResourceSpec` (`node.with_platform_config(...)`), and copies it into the
node's executor container (tfx/orchestration/kubeflow/v2/step_builder.py). The two KFP v2 backends
read the accelerator differently:

- Vertex AI Pipelines: `accelerator.type` is a Vertex accelerator (`NVIDIA_L4`); Vertex picks a
  machine with that GPU and at least the CPU and memory limits.
- Kubeflow Pipelines (open source): `accelerator.type` becomes the container's extended-resource
  limit name (`nvidia.com/gpu: <count>`), CPU and memory become requests and limits, and the GPU
  model is chosen by a node selector in the pipeline's Kubernetes platform spec (the kfp-kubernetes
  `nodeSelector` format), on GKE `cloud.google.com/gke-accelerator: nvidia-l4`.

create_pipeline stays orchestrator-agnostic: the resources are applied here, by node id
(`TRAINER_NODE_IDS`), to the pipeline it built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

TARGETS = ("kubeflow", "vertex")
KUBERNETES_GPU_RESOURCE = "nvidia.com/gpu"
GKE_ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"


class ResourceError(ValueError):
    """An accelerator, count, CPU or memory value a cluster cannot honour."""


@dataclass(frozen=True)
class Accelerator:
    name: str
    vertex_type: str  # google.cloud.aiplatform_v1.AcceleratorType name
    gke_label: str  # value of the cloud.google.com/gke-accelerator node label


# The GPUs a trainer can ask for, by short name (`--accelerator-type L4`).
ACCELERATORS: Dict[str, Accelerator] = {
    a.name: a
    for a in (
        Accelerator("T4", "NVIDIA_TESLA_T4", "nvidia-tesla-t4"),
        Accelerator("V100", "NVIDIA_TESLA_V100", "nvidia-tesla-v100"),
        Accelerator("L4", "NVIDIA_L4", "nvidia-l4"),
        Accelerator("A100", "NVIDIA_TESLA_A100", "nvidia-tesla-a100"),
        Accelerator("A100-80GB", "NVIDIA_A100_80GB", "nvidia-a100-80gb"),
        Accelerator("H100", "NVIDIA_H100_80GB", "nvidia-h100-80gb"),
        Accelerator("H100-MEGA", "NVIDIA_H100_MEGA_80GB", "nvidia-h100-mega-80gb"),
        Accelerator("H200", "NVIDIA_H200_141GB", "nvidia-h200-141gb"),
    )
}


@dataclass(frozen=True)
class NodeResources:
    """CPU (vCPU) and memory (GB, 10^9 bytes, as KFP's ResourceSpec counts it) for a node, and
    optionally GPUs. `accelerator` is a short name from ACCELERATORS or, passed through as is, a
    Vertex accelerator type (`NVIDIA_...`) or a Kubernetes resource name (`nvidia.com/gpu`)."""

    cpu: Optional[float] = None
    memory_gb: Optional[float] = None
    accelerator: Optional[str] = None
    accelerator_count: int = 0
    # Kubeflow: (label, value) that selects the nodes with this GPU; None = derived from the
    # accelerator on GKE, ("", "") = no node selector (a cluster with one kind of GPU node).
    node_selector: Optional[Tuple[str, str]] = None

    def __post_init__(self) -> None:
        if self.cpu is not None and self.cpu <= 0:
            raise ResourceError(f"cpu={self.cpu}: must be positive")
        if self.memory_gb is not None and self.memory_gb <= 0:
            raise ResourceError(f"memory_gb={self.memory_gb}: must be positive")
        if self.accelerator and self.accelerator_count < 1:
            raise ResourceError(
                f"accelerator_count={self.accelerator_count}: need >= 1 with accelerator {self.accelerator!r}"
            )
        if self.accelerator_count and not self.accelerator:
            raise ResourceError(f"accelerator_count={self.accelerator_count}: no accelerator type given")
        if self.accelerator and self.accelerator not in ACCELERATORS and not _raw_type(self.accelerator):
            raise ResourceError(
                f"accelerator={self.accelerator!r}: one of {', '.join(ACCELERATORS)}, a Vertex type "
                "(NVIDIA_...) or a Kubernetes resource name (nvidia.com/gpu)"
            )

    def accelerator_type(self, target: str) -> str:
        """The ResourceSpec accelerator type for `target`."""
        _check_target(target)
        known = ACCELERATORS.get(self.accelerator or "")
        if target == "vertex":
            if known:
                return known.vertex_type
            if "/" in (self.accelerator or ""):
                raise ResourceError(
                    f"accelerator={self.accelerator!r} is a Kubernetes resource name; Vertex AI "
                    f"takes a type such as {ACCELERATORS['L4'].vertex_type}"
                )
            return self.accelerator or ""
        if known or (self.accelerator or "").startswith("NVIDIA_"):
            return KUBERNETES_GPU_RESOURCE
        return self.accelerator or ""

    def gpu_node_selector(self) -> Optional[Tuple[str, str]]:
        """The Kubernetes node label that selects this GPU, or None."""
        if not self.accelerator:
            return None
        if self.node_selector is not None:
            return self.node_selector if self.node_selector[0] else None
        known = ACCELERATORS.get(self.accelerator)
        return (GKE_ACCELERATOR_LABEL, known.gke_label) if known else None


def _raw_type(name: str) -> bool:
    return name.startswith("NVIDIA_") or "/" in name


def _check_target(target: str) -> None:
    if target not in TARGETS:
        raise ResourceError(f"target={target!r}: one of {', '.join(TARGETS)}")


def resource_spec(resources: NodeResources, target: str):
    """The KFP ResourceSpec for a node. Vertex sizes its machine from the limits; on Kubernetes the
    requests equal the limits, so the scheduler reserves what the trainer may use."""
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec()
    if resources.cpu is not None:
        spec.cpu_limit = resources.cpu
        if target == "kubeflow":
            spec.cpu_request = resources.cpu
    if resources.memory_gb is not None:
        spec.memory_limit = resources.memory_gb
        if target == "kubeflow":
            spec.memory_request = resources.memory_gb
    if resources.accelerator:
        spec.accelerator.type = resources.accelerator_type(target)
        spec.accelerator.count = resources.accelerator_count
    return spec


def apply_resources(
    pipeline, target: str, trainers: NodeResources, trainer_ids: Iterable[str], others: Optional[NodeResources] = None
) -> List[str]:
    """Sets the resources of the pipeline's container nodes in place: `trainers` on the nodes whose
    id is in `trainer_ids` (the only ones that get GPUs), `others` (CPU and memory only) on every
    other container node. Returns the ids of the trainers found."""
    from tfx.dsl.components.base import base_component

    if others is not None and others.accelerator:
        raise ResourceError("only the trainers get accelerators")
    trainer_ids = set(trainer_ids)
    found = []
    for node in pipeline.components:
        if not isinstance(node, base_component.BaseComponent):
            continue  # resolvers and importers run no container of ours
        if node.id in trainer_ids:
            node.with_platform_config(resource_spec(trainers, target))
            found.append(node.id)
        elif others is not None and (others.cpu is not None or others.memory_gb is not None):
            node.with_platform_config(resource_spec(others, target))
    if not found:
        raise ResourceError(f"no trainer node ({', '.join(sorted(trainer_ids))}) in the pipeline")
    return found


def kubernetes_platform_spec(
    pipeline_spec: Mapping, task_names: Iterable[str], selector: Optional[Tuple[str, str]]
) -> Dict:
    """The Kubernetes platform spec (kfp-kubernetes format) that pins `task_names` (the trainers)
    to GPU nodes with `selector`; empty without a selector."""
    if not selector:
        return {}
    executors = {}
    for task in task_names:
        component = pipeline_spec["root"]["dag"]["tasks"][task]["componentRef"]["name"]
        label = pipeline_spec["components"][component]["executorLabel"]
        executors[label] = {"nodeSelector": {"labels": {selector[0]: selector[1]}}}
    return {"platforms": {"kubernetes": {"deploymentSpec": {"executors": executors}}}}
