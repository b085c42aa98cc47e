"""RegistryPusher: pushes a blessed model to the MLflow Model Registry, never an unblessed one.

For a blessed model it registers a new version carrying its metrics, data spans, pipeline run id,
ML Metadata artifact ids, feature config and git commit, as an MLflow model (the pyfunc flavor of
src/speechpipe/results/pyfunc.py, the SavedModel inside it); a speaker model also carries its
decision threshold (tags and operating_point.json). It downloads the version back from the
registry, smoke-tests the SavedModel's serving signature (`transcribe`, or `embed` for the
speaker embedder) and the pyfunc flavor, and only then moves the `champion` alias. An unblessed
model is recorded as not pushed, with the evaluator's reason.

A model is never made champion without beating the version it replaces (`claim_champion`). Two
runs on one registry may evaluate at once, each against the champion of its start, and push in
turn; so under the registry's champion lock (src/speechpipe/results/registry.py) the pusher reads
the champion again. When it is the one the evaluator compared with (or there is none), the
evaluator's verdict stands. When another run made a new champion meanwhile, the pusher measures
that champion on this run's own test split with the evaluator's metric function
(speechpipe.components.blessing.measure_on_test_split), outside the lock, then takes the lock again
and moves the alias only if the candidate beats it by the evaluator's margin and it is still the
champion. Otherwise the version stays registered without the alias, and push.json and the
version's tags say why (`champion_decision`).

A custom executor (not a Python-function component) because the executor context carries the
pipeline run id, which must not be an execution parameter: it would defeat the cache. Artifact
URIs may be local folders or object storage (TFX's fileio; the registry stages what MLflow must
read from a local folder).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any, Callable, Dict, List, Optional

from tfx import types
from tfx.dsl.components.base import base_component, base_executor, executor_spec
from tfx.types import artifact_utils, standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from speechpipe.io import storage

log = logging.getLogger(__name__)

PUSH_FILE = "push.json"
OPERATING_POINT_FILE = "operating_point.json"
# Rounds of "the champion changed: measure the new one" before giving up; each round needs another
# run to have made a champion while this one measured the last.
CLAIM_ATTEMPTS = 3


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


def _run_param(registry, run_id: Optional[str], key: str) -> str:
    if not run_id:
        return ""
    try:
        return str(registry.client.get_run(run_id).data.params.get(key, ""))
    except Exception:  # the run may live elsewhere
        return ""


def was_compared(registry, due: Dict[str, Any], compared: Optional[Dict[str, Any]]) -> bool:
    """Whether the registry version `due` is the champion the evaluator measured: evaluation.json's
    `champion`, named by registry version (a registry champion) or by its ML Metadata model's URI,
    which the version that model was pushed as carries (tag, or run parameter `model_uri`)."""
    if not compared:
        return False
    if compared.get("registry_version"):
        return str(compared["registry_version"]) == str(due["version"])
    uri = due.get("tags", {}).get("model_uri") or _run_param(registry, due.get("run_id"), "model_uri")
    return bool(uri) and uri == compared.get("uri")


def claim_champion(
    registry,
    name: str,
    version: str,
    data_key: str,
    compared: Optional[Dict[str, Any]],
    metric: str,
    candidate_value: float,
    margin: float,
    measure: Callable[[str], Dict[str, Any]],
    attempts: int = CLAIM_ATTEMPTS,
) -> Dict[str, Any]:
    """Moves the `champion` alias of `name` to `version` if it beats the champion it replaces.

    The champion due for comparison is the registry's for this run's data key (the rule the
    champion steps resolve by: components/registry_champion.py `find_champion`). `compared` is
    the champion the evaluator measured (evaluation.json's `champion`, None for none), with
    `candidate_value` the candidate's `metric` on this run's test split and `margin` the
    evaluator's improvement margin; `measure(version)` measures a registry version on that same
    split. Returns {"champion": moved or not, "why", "compared_with": the version compared with
    (None: no champion), "replaced": the alias's holder before, "champion_metrics" when the
    pusher measured the champion itself, "lock": the lock file, None for a compare-and-set}."""
    from speechpipe.components.blessing import decide
    from speechpipe.components.registry_champion import find_champion

    measured: Dict[str, Dict[str, Any]] = {}
    # Each round reads the champion under the lock; a round ends in a decision, in measuring a
    # champion made meanwhile (at most `attempts` of them), or, without a lock, in a lost set.
    for _ in range(2 * attempts + 1):
        with registry.champion_lock() as lock:
            holder = registry.champion(name)
            due, _ = find_champion(registry, name, data_key)
            due_version = None if due is None else str(due["version"])
            outcome: Dict[str, Any] = {"compared_with": due_version, "replaced": holder, "lock": lock}
            changed, pending = "", None
            champion_value: Optional[float] = None
            if due is None:
                pass
            elif was_compared(registry, due, compared):
                champion_value = float(compared[metric])  # type: ignore[index]
            elif due_version in measured:
                champion_value = float(measured[due_version][metric])
                outcome["champion_metrics"] = measured[due_version]
                changed = f"the champion changed to v{due_version} while this run evaluated"
            else:
                pending = str(due_version)  # not measured yet: measured below, outside the lock
            if pending is None:
                reasons = (
                    decide({metric: candidate_value}, {metric: champion_value}, {}, {metric: margin})
                    if champion_value is not None
                    else []
                )
                if reasons:
                    outcome.update(
                        champion=False,
                        why=f"not champion: {changed or f'v{due_version} is champion'}, and on this run's "
                        f"test split {'; '.join(reasons)}",
                    )
                    return outcome
                after = registry.move_champion(name, version, holder)
                if after == version:
                    outcome.update(
                        champion=True,
                        why=(
                            f"{metric.upper()} {candidate_value:.4f} beats v{due_version}'s {champion_value:.4f}"
                            f" on this run's test split ({changed})"
                            if changed
                            else "no champion to beat"
                            if champion_value is None
                            else f"it beat the champion v{due_version}"
                        ),
                    )
                    return outcome
                # A tracking server (no lock): another pusher moved the alias between this read and
                # the set; decide again against the champion it made.
                log.warning("%s: the champion alias moved to v%s while v%s claimed it", name, after, version)
                continue
        if pending is not None:
            if len(measured) >= attempts:
                break
            # Measuring a model may take minutes: other pushers may decide meanwhile, so the
            # champion is read again under the lock before anything moves.
            try:
                measured[pending] = measure(pending)
            except Exception as error:  # a champion that cannot be measured here is not beaten
                log.exception("%s v%s: measuring the champion v%s failed", name, version, pending)
                return {
                    "champion": False,
                    "why": f"not champion: the champion changed to v{pending} while this run evaluated, and "
                    f"measuring it on this run's test split failed: {type(error).__name__}: {error}"[:2000],
                    "compared_with": None,
                    "replaced": registry.champion(name),
                    "lock": registry.lock_path,
                }
    return {
        "champion": False,
        "why": f"not champion: the champion changed more than {attempts} times while this run compared "
        "with it; re-run to compare",
        "compared_with": None,
        "replaced": registry.champion(name),
        "lock": registry.lock_path,
    }


class Executor(base_executor.BaseExecutor):
    def Do(
        self,
        input_dict: Dict[str, List[types.Artifact]],
        output_dict: Dict[str, List[types.Artifact]],
        exec_properties: Dict[str, Any],
    ) -> None:
        from speechpipe.components.blessing import METRICS, measure_on_test_split, serving_dir
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
                "test_per_lm": candidate.get("per_lm"),
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
            # The trainer's Model artifact: what tells an ML Metadata champion's version apart.
            "model_uri": model.uri,
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
        record["smoke_test"] = smoke
        metric = METRICS[kind]

        def measure(version: str) -> Dict[str, Any]:
            with tempfile.TemporaryDirectory() as tmp:
                return measure_on_test_split(kind, evaluation, saved_model_in(registry.download(name, version, tmp)))

        claim = claim_champion(
            registry,
            name,
            registered.version,
            exec_properties.get("data_key") or "",
            champion or None,
            metric,
            float(candidate[metric]),
            float((evaluation.get("thresholds") or {}).get(f"min_{metric}_improvement") or 0.0),
            measure,
        )
        decision = {
            "champion_decision": ("champion: " if claim["champion"] else "") + claim["why"],
            "champion_compared_with": claim["compared_with"] or "none",
            "champion_replaced": claim["replaced"] or "none",
        }
        for key, value in decision.items():
            registry.tag_version(name, registered.version, key, value[:5000])
        record["tags"].update(decision)
        record["champion"] = claim
        pushed.set_string_custom_property("pushed_destination", f"models:/{name}/{registered.version}")
        pushed.set_string_custom_property("pushed_version", registered.version)
        pushed.set_int_custom_property("champion", int(claim["champion"]))
        if claim["champion"]:
            # Measured by the pusher (the champion changed while this run evaluated), the evaluator's
            # verdict ("no champion yet", say) no longer describes what the model beat.
            why = claim["why"] if claim.get("champion_metrics") else evaluation.get("why", "blessed")
            finish(True, f"pushed as {name} v{registered.version} and made champion: {why}")
        else:
            finish(True, f"pushed as {name} v{registered.version}, {claim['why']}; the champion is unchanged")


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
