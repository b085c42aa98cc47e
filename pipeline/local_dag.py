"""Runs a compiled pipeline on this machine, node by node, as TFX's LocalDagRunner does, with two
differences a user of `speechpipe run` needs:

- **A failure stops its own branch only.** LocalDagRunner raises at the first failed node, so a
  CTC span that fails its validation gate would also stop the speaker branch, whose data is
  fine. Here a failed node's descendants are skipped (each with the reason) and every node that
  does not depend on it still runs; cluster orchestrators (KFP, Vertex AI) behave the same way,
  since they run any task whose inputs are ready.
- **Progress comes from the execution itself**: each node's start, its ML Metadata execution
  (executed or served from the cache) and its failure are reported to a callback, instead of
  being read back out of TFX's log text.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

EXECUTED, CACHED, FAILED, SKIPPED = "done", "cached", "failed", "skipped"


@dataclass
class NodeOutcome:
    """What happened to one node of the run."""

    node: str
    how: str  # EXECUTED, CACHED, FAILED or SKIPPED
    seconds: float = 0.0
    execution_id: Optional[int] = None
    error: Optional[BaseException] = None
    why: str = ""  # for a skipped node: the failed node upstream


@dataclass
class RunOutcome:
    nodes: List[NodeOutcome] = field(default_factory=list)

    @property
    def failed(self) -> List[NodeOutcome]:
        return [n for n in self.nodes if n.how == FAILED]

    def first_error(self) -> Optional[BaseException]:
        return self.failed[0].error if self.failed else None


class BranchFailures(RuntimeError):
    """One or more nodes failed; the nodes that did not depend on them ran."""

    def __init__(self, outcome: RunOutcome) -> None:
        self.outcome = outcome
        parts = [f"{n.node}: {type(n.error).__name__}: {n.error}" for n in outcome.failed]
        super().__init__("; ".join(parts))


def _state_of(connection_config, execution_id: Optional[int]) -> str:
    """CACHED when the launcher served the node from the cache, else EXECUTED."""
    if execution_id is None:
        return EXECUTED
    from ml_metadata.proto import metadata_store_pb2
    from tfx.orchestration import metadata

    with metadata.Metadata(connection_config) as m:
        (execution,) = m.store.get_executions_by_id([execution_id])
    return CACHED if execution.last_known_state == metadata_store_pb2.Execution.CACHED else EXECUTED


def run_ir(
    ir,
    on_start: Callable[[str], None] = lambda node: None,
    on_end: Callable[[NodeOutcome], None] = lambda outcome: None,
) -> RunOutcome:
    """Runs every node of the pipeline IR `ir` in its (topological) order. Returns what happened
    to each; raises `BranchFailures` after the last node when any node failed."""
    from tfx.orchestration import metadata
    from tfx.orchestration.local import runner_utils
    from tfx.orchestration.portable import launcher

    deployment_config = runner_utils.extract_local_deployment_config(ir)
    connection = deployment_config.metadata_connection_config
    connection_config = getattr(connection, connection.WhichOneof("connection_config"))
    outcome = RunOutcome()
    stopped: Dict[str, str] = {}  # node id -> the failed node that stops it
    for node in ir.nodes:
        pipeline_node = node.pipeline_node
        node_id = pipeline_node.node_info.id
        if pipeline_node.execution_options.HasField("skip"):
            continue
        blocked = [stopped[u] for u in pipeline_node.upstream_nodes if u in stopped]
        if blocked:
            stopped[node_id] = blocked[0]
            done = NodeOutcome(node_id, SKIPPED, why=f"{blocked[0]} failed")
            outcome.nodes.append(done)
            on_end(done)
            continue
        on_start(node_id)
        started = time.time()
        component_launcher = launcher.Launcher(
            pipeline_node=pipeline_node,
            mlmd_connection=metadata.Metadata(connection_config),
            pipeline_info=ir.pipeline_info,
            pipeline_runtime_spec=ir.runtime_spec,
            executor_spec=runner_utils.extract_executor_spec(deployment_config, node_id),
            custom_driver_spec=runner_utils.extract_custom_driver_spec(deployment_config, node_id),
        )
        try:
            info = component_launcher.launch()
        except Exception as error:  # recorded; the node's descendants are skipped
            stopped[node_id] = node_id
            done = NodeOutcome(node_id, FAILED, time.time() - started, error=error)
        else:
            execution_id = getattr(info, "execution_id", None)
            done = NodeOutcome(
                node_id, _state_of(connection_config, execution_id), time.time() - started, execution_id=execution_id
            )
        outcome.nodes.append(done)
        on_end(done)
    if outcome.failed:
        raise BranchFailures(outcome)
    return outcome
