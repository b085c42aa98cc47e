"""RegistryChampion: the champion from the MLflow registry's `champion` alias, as a Model artifact.

`speechpipe compile --champion-from registry`. Open-source Kubeflow Pipelines runs no resolver
tasks ("resolver executors not implemented"), so the ML Metadata champion resolver
(components/champion_resolver.py) cannot run there. This container step stands in for it: it asks
the registry (src/speechpipe/results/registry.py) for the version of the branch's model that holds the alias
`champion` (moved by components/registry_pusher.py after each blessed, smoke-tested push),
downloads that version's SavedModel and publishes it as the `model` output, a standard Model
artifact with the SavedModel in `Format-Serving/`, which the trainer (warm start, `base_model`)
and the evaluator (champion comparison) consume as they consume a resolved champion.

The same rule as ChampionStrategy's: a model trained on this run's own data key is not its
champion (so a re-run on the same data compares with what the run before it compared with). When
the alias's version carries this run's `data_key` tag, the champion is the newest older version
whose smoke test passed and whose data key differs.

No champion (no registered model, no alias, or only versions on this data key): a step always
publishes its outputs, so the Model artifact is published *marked absent*: custom property
`champion` = 0 with `why`, no SavedModel, and a `NO_CHAMPION` file in `Format-Serving/`. The
consumers treat it exactly as the resolver's empty answer: the evaluators compare with nothing
(speechpipe.components.blessing, `present_champion`) and the trainers drop it as they read their
inputs (speechpipe.components.trainer_contract, `read_inputs`): warm start "no champion yet".

Caching: the step's execution parameters are the registry, the model name and this run's data
key, so a re-run on the same data reuses the champion the first run with that data key found
(and everything downstream is a cache hit, as with the resolver); a run on new data asks the
registry again. docs/deploy.md (Limits) says where that differs from the resolver.
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Any, Dict, List, Optional, Tuple

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from speechpipe.filenames import SERVING_DIR
from speechpipe.io import storage

log = logging.getLogger(__name__)

NO_CHAMPION_FILE = "NO_CHAMPION"
CHAMPION_FILE = "champion.json"


class RegistryChampionSpec(types.ComponentSpec):
    PARAMETERS = {
        "tracking_uri": ExecutionParameter(type=str),
        "model_name": ExecutionParameter(type=str),
        "data_key": ExecutionParameter(type=str, optional=True),
        "model_kind": ExecutionParameter(type=str, optional=True),  # "ctc" (default) or "speaker"
    }
    INPUTS: Dict[str, ChannelParameter] = {}
    OUTPUTS = {"model": ChannelParameter(type=standard_artifacts.Model)}


def find_champion(registry, name: str, data_key: str) -> Tuple[Optional[Dict[str, Any]], str]:
    """(version, why): the registry's champion for a run on `data_key`, as {"version", "tags",
    "source", "run_id"}, or None and why there is none."""
    from mlflow.exceptions import MlflowException

    from speechpipe.results.registry import CHAMPION

    client = registry.client
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as error:
        return None, f"no version of {name} has the alias {CHAMPION} ({str(error).splitlines()[0][:200]})"
    tags = dict(current.tags or {})
    if not data_key or tags.get("data_key") != data_key:
        return _describe(current), f"{name} v{current.version} holds the alias {CHAMPION}"
    # The alias's version was trained on this run's data: its champion is the one before it.
    older = [
        v
        for v in client.search_model_versions(f"name='{name}'")
        if int(v.version) < int(current.version)
        and (v.tags or {}).get("smoke_test") == "passed"
        and (v.tags or {}).get("data_key") != data_key
    ]
    if not older:
        return None, (
            f"{name} v{current.version} holds the alias {CHAMPION} but was trained on this run's data "
            f"(data key {data_key}), and no older version was champion on other data"
        )
    chosen = max(older, key=lambda v: int(v.version))
    return _describe(chosen), (
        f"{name} v{current.version} holds the alias {CHAMPION} but was trained on this run's "
        f"data; its predecessor on other data is v{chosen.version}"
    )


def _describe(version) -> Dict[str, Any]:
    return {
        "version": str(version.version),
        "tags": dict(version.tags or {}),
        "source": version.source,
        "run_id": version.run_id,
    }


def upload_tree(local_dir: str, uri: str) -> int:
    """Copies a local folder to a folder or URI through TFX's fileio; returns the files copied."""
    from tfx.dsl.io import fileio

    count = 0
    for folder, _, files in os.walk(local_dir):
        relative = os.path.relpath(folder, local_dir)
        target = uri if relative == "." else storage.join(uri, *relative.split(os.sep))
        fileio.makedirs(target)
        for name in files:
            fileio.copy(os.path.join(folder, name), storage.join(target, name), overwrite=True)
            count += 1
    return count


def publish_champion(
    model: types.Artifact, tracking_uri: str, name: str, data_key: str, model_kind: str = "ctc"
) -> Dict[str, Any]:
    """Fills the Model artifact `model` with the registry's champion, or marks it absent; returns
    the record written to `champion.json`."""
    from speechpipe.results.registry import CHAMPION, Registry

    registry = Registry(tracking_uri)
    found, why = find_champion(registry, name, data_key)
    serving = storage.join(model.uri, SERVING_DIR)
    storage.makedirs(serving)
    record: Dict[str, Any] = {
        "champion": found is not None,
        "why": why,
        "model_name": name,
        "model_kind": model_kind,
        "alias": CHAMPION,
        "tracking_uri": tracking_uri,
        "data_key": data_key,
    }
    model.set_string_custom_property("model_kind", model_kind)
    model.set_string_custom_property("why", why)
    model.set_string_custom_property("registry_model", name)
    if found is None:
        storage.write_bytes(storage.join(serving, NO_CHAMPION_FILE), (why + "\n").encode("utf-8"))
        model.set_int_custom_property("champion", 0)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            from speechpipe.results.resolve import ModelNotFound, saved_model_in

            downloaded = registry.download(name, found["version"], tmp)
            try:  # an MLflow model folder (the pyfunc flavor) or, pushed before it, the SavedModel itself
                local = saved_model_in(downloaded)
            except ModelNotFound as error:
                raise FileNotFoundError(f"{name} v{found['version']} ({found['source']}): {error}") from None
            record["files"] = upload_tree(local, serving)
        tags = found["tags"]
        record.update(
            {
                "version": found["version"],
                "source": found["source"],
                "mlflow_run_id": found["run_id"],
                "tags": {
                    k: tags[k]
                    for k in ("data_key", "data_spans", "pipeline_run_id", "mlmd_model_id", "git_commit", "smoke_test")
                    if k in tags
                },
            }
        )
        model.set_int_custom_property("champion", 1)
        model.set_string_custom_property("registry_version", found["version"])
        model.set_string_custom_property("registry_source", found["source"])
        model.set_string_custom_property("data_key", tags.get("data_key", ""))
        model.set_string_custom_property("trained_mlmd_model_id", tags.get("mlmd_model_id", ""))
    storage.write_json(storage.join(model.uri, CHAMPION_FILE), record, indent=1, sort_keys=True)
    log.info("registry champion (%s): %s", model_kind, why)
    return record


def champion_absent(path: Optional[str]) -> bool:
    """True for a champion published as absent: a serving folder (a trainer's `base_model`, an
    evaluator's serving_dir) or a Model artifact's folder holding the NO_CHAMPION marker."""
    if not path:
        return True
    return any(storage.exists(storage.join(p, NO_CHAMPION_FILE)) for p in (path, storage.join(path, SERVING_DIR)))


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        model = artifact_utils.get_single_instance(output_dict["model"])
        publish_champion(
            model,
            exec_properties["tracking_uri"],
            exec_properties["model_name"],
            exec_properties.get("data_key") or "",
            exec_properties.get("model_kind") or "ctc",
        )


class RegistryChampion(base_component.BaseComponent):
    """The branch's champion from the MLflow registry (`outputs["model"]`, like a champion
    resolver's), for orchestrators that run no resolver tasks (open-source KFP)."""

    SPEC_CLASS = RegistryChampionSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, tracking_uri: str, model_name: str, data_key: str = "", model_kind: str = "ctc") -> None:
        spec = RegistryChampionSpec(
            tracking_uri=tracking_uri,
            model_name=model_name,
            data_key=data_key,
            model_kind=model_kind,
            model=types.Channel(type=standard_artifacts.Model),
        )
        super().__init__(spec=spec)
