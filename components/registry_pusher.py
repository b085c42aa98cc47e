"""RegistryPusher: pushes a blessed model to the MLflow Model Registry, never an unblessed one.

For a blessed model it registers a new version carrying its metrics, data spans, pipeline run id,
ML Metadata artifact ids, feature config and git commit, as an MLflow model (the pyfunc flavor of
src/speechpipe/results/pyfunc.py, the SavedModel inside it); a speaker model also carries its
decision threshold (tags and operating_point.json). It downloads the version back from the
registry, smoke-tests the SavedModel's serving signature (`transcribe`, or `embed` for the
speaker embedder) and the pyfunc flavor, and only then moves the `champion` alias. An unblessed
model is recorded as not pushed, with the evaluator's reason.

A custom executor (not a Python-function component) because the executor context carries the
pipeline run id, which must not be an execution parameter: it would defeat the cache. Artifact
URIs may be local folders or object storage (TFX's fileio; the registry stages what MLflow must
read from a local folder).
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any, Dict, List

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from speechpipe.io import storage

PUSH_FILE = "push.json"
OPERATING_POINT_FILE = "operating_point.json"


class RegistryPusherSpec(types.ComponentSpec):
    PARAMETERS = {
        "tracking_uri": ExecutionParameter(type=str),
        "artifact_root": ExecutionParameter(type=str, optional=True),
        "model_name": ExecutionParameter(type=str),
        "pipeline_name": ExecutionParameter(type=str),
        "data_key": ExecutionParameter(type=str, optional=True),
        "feature_config": ExecutionParameter(type=str),
        "model_kind": ExecutionParameter(type=str, optional=True),  # "ctc" (default) or "speaker"
    }
    INPUTS = {
        "model": ChannelParameter(type=standard_artifacts.Model),
        "model_blessing": ChannelParameter(type=standard_artifacts.ModelBlessing),
        "examples": ChannelParameter(type=standard_artifacts.Examples),
    }
    OUTPUTS = {"pushed_model": ChannelParameter(type=standard_artifacts.PushedModel)}


def _read_json(path: str) -> Dict[str, Any]:
    """A JSON file's object, local or URI; {} when it is missing or unreadable."""
    try:
        return storage.read_json(path)
    except Exception:  # gfile raises tf.errors (NotFoundError, ...), not OSError
        return {}


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        from speechpipe.components.blessing import serving_dir
        from speechpipe.components.examples_union import member_spans
        from speechpipe.filenames import EVALUATION_FILE, RESULT_FILE
        from speechpipe.results.pyfunc import save_flavor, smoke_test_flavor
        from speechpipe.results.registry import SMOKE_TESTS, Registry, SmokeTestError, git_commit, speechpipe_version
        from speechpipe.results.resolve import saved_model_in

        model = artifact_utils.get_single_instance(input_dict["model"])
        blessing = artifact_utils.get_single_instance(input_dict["model_blessing"])
        # The spans behind the training examples: a multi-span pipeline's ExamplesUnion stands for its
        # members (components/examples_union.py), so the tags name every span and its FeatureGen output.
        spans = member_spans(input_dict["examples"])
        pushed = artifact_utils.get_single_instance(output_dict["pushed_model"])
        run_id = (self._context.pipeline_run_id if self._context else None) or "unknown"
        evaluation = _read_json(storage.join(blessing.uri, EVALUATION_FILE))
        record: Dict[str, Any] = {"pipeline_run_id": run_id, "model_id": model.id, "blessing_id": blessing.id}
        storage.makedirs(pushed.uri)

        def finish(pushed_flag: bool, why: str) -> None:
            record.update({"pushed": pushed_flag, "why": why})
            storage.write_json(storage.join(pushed.uri, PUSH_FILE), record, indent=1)
            pushed.set_int_custom_property("pushed", int(pushed_flag))
            pushed.set_string_custom_property("why", why)

        if blessing.get_int_custom_property("blessed") != 1:
            finish(
                False,
                "not pushed: the model is not blessed: "
                + (blessing.get_string_custom_property("why") or evaluation.get("why", "no reason recorded")),
            )
            return

        model_dir = serving_dir(model.uri)
        training = _read_json(storage.join(model_dir, RESULT_FILE))
        warm = training.get("warm_start") or {}
        kind = exec_properties.get("model_kind") or "ctc"
        candidate, champion = evaluation.get("candidate", {}), evaluation.get("champion") or {}
        if kind == "speaker":
            metrics = {
                "test_eer": candidate.get("eer"),
                "test_min_dcf": candidate.get("min_dcf"),
                "test_mr": candidate.get("mr"),
                "test_ari": candidate.get("ari"),
                "test_mr_threshold": candidate.get("mr_threshold"),
                "best_val_eer": training.get("best_val_eer"),
                "steps": training.get("steps"),
                "train_minutes": (training.get("train_seconds") or 0) / 60 or None,
                "champion_test_eer": champion.get("eer"),
            }
        else:
            metrics = {
                "test_per": candidate.get("per"),
                "best_val_per": training.get("best_val_per"),
                "epochs": training.get("epochs"),
                "train_minutes": training.get("train_minutes"),
                "champion_test_per": champion.get("per"),
            }
        tags = {
            "pipeline_name": exec_properties["pipeline_name"],
            "pipeline_run_id": run_id,
            "mlmd_model_id": str(model.id),
            "mlmd_model_blessing_id": str(blessing.id),
            "mlmd_examples_ids": ",".join(examples_id for _, examples_id in spans),
            "mlmd_test_examples_id": str(evaluation.get("test_examples", {}).get("id", "")),
            "data_spans": ",".join(span for span, _ in spans),
            "data_key": exec_properties.get("data_key") or "",
            "feature_config": exec_properties["feature_config"],
            "git_commit": git_commit(),
            "speechpipe_version": speechpipe_version(),
            "blessed_why": evaluation.get("why", ""),
            "warm_start": str(bool(warm.get("warm_start"))),
            "champion_before": str(evaluation.get("champion", {}) and evaluation["champion"].get("model_id") or ""),
        }
        if champion.get("registry_version"):  # a registry champion (components/registry_champion.py)
            tags["champion_before_version"] = str(champion["registry_version"])
        params = {f"{kind}_config": json.dumps(training.get("config", {})), "model_uri": model.uri}
        files = {}
        if storage.exists(storage.join(blessing.uri, EVALUATION_FILE)):
            files["evaluation"] = storage.join(blessing.uri, EVALUATION_FILE)
        operating = evaluation.get("operating_point") or {}
        if kind == "speaker" and operating.get("threshold") is not None:
            # What `speechpipe verify` decides with, and where it came from.
            tags.update(
                {
                    "decision_threshold": repr(float(operating["threshold"])),
                    "decision_threshold_source": operating.get("source", ""),
                    "target_far": repr(float(operating.get("target_far", 0.0))),
                }
            )
        registry = Registry(exec_properties["tracking_uri"], exec_properties.get("artifact_root") or None)
        name = exec_properties["model_name"]
        sample_rate = int(json.loads(exec_properties["feature_config"]).get("sample_rate", 16000))
        with tempfile.TemporaryDirectory() as staging:
            # The version is an MLflow model (pyfunc flavor) holding the SavedModel: the flavor is
            # written from a local copy of the trainer's export (which may be on object storage).
            local_model = (
                storage.copy_tree_to_local(model_dir, os.path.join(staging, "saved_model"))
                if storage.is_uri(model_dir)
                else model_dir
            )
            flavor = save_flavor(
                local_model,
                kind,
                os.path.join(staging, "flavor"),
                sample_rate,
                {"model_kind": kind, "pipeline_run_id": run_id},
            )
            if operating:
                with open(os.path.join(staging, OPERATING_POINT_FILE), "w", encoding="utf-8") as f:
                    json.dump(operating, f, indent=1, sort_keys=True)
                files["operating_point"] = os.path.join(staging, OPERATING_POINT_FILE)
            registered = registry.register(
                name, flavor, {k: v for k, v in metrics.items() if v is not None}, tags, params, files
            )
        record.update(
            {
                "model_name": name,
                "version": registered.version,
                "mlflow_run_id": registered.run_id,
                "source": registered.source,
                "tracking_uri": registry.tracking_uri,
                "tags": tags,
                "metrics": metrics,
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            loaded = registry.download(name, registered.version, tmp)
            try:
                smoke = SMOKE_TESTS[kind](saved_model_in(loaded))
                smoke.update(smoke_test_flavor(loaded, kind))
            except Exception as error:
                registry.tag_version(name, registered.version, "smoke_test", "failed")
                finish(
                    False, f"registered as v{registered.version} but its smoke test failed, champion unchanged: {error}"
                )
                raise SmokeTestError(record["why"]) from error
        registry.tag_version(name, registered.version, "smoke_test", "passed")
        registry.set_champion(name, registered.version)
        record["smoke_test"] = smoke
        pushed.set_string_custom_property("pushed_destination", f"models:/{name}/{registered.version}")
        pushed.set_string_custom_property("pushed_version", registered.version)
        finish(True, f"pushed as {name} v{registered.version} and made champion: {evaluation.get('why', 'blessed')}")


class RegistryPusher(base_component.BaseComponent):
    SPEC_CLASS = RegistryPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        model_blessing: types.BaseChannel,
        examples: types.BaseChannel,
        tracking_uri: str,
        model_name: str,
        pipeline_name: str,
        feature_config: str,
        data_key: str = "",
        artifact_root: str = "",
        model_kind: str = "ctc",
    ) -> None:
        spec = RegistryPusherSpec(
            model=model,
            model_blessing=model_blessing,
            examples=examples,
            tracking_uri=tracking_uri,
            artifact_root=artifact_root,
            model_name=model_name,
            pipeline_name=pipeline_name,
            data_key=data_key,
            feature_config=feature_config,
            model_kind=model_kind,
            pushed_model=types.Channel(type=standard_artifacts.PushedModel),
        )
        super().__init__(spec=spec)
