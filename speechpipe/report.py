"""The run report: what every node did (executed or cached), data statistics and dead letters, the
validation verdicts, training curves, PER (candidate vs champion), what was pushed and why.

`collect` reads one pipeline run back from ML Metadata (the executions in the run's
`pipeline_run` context, their node contexts and output artifacts) and the small JSON files the
components write next to their artifacts; `write` turns it into Markdown with PNG plots under
`<home>/reports/<run id>/` (report.md, report.json, *.png).
"""
from __future__ import annotations

import glob
import json
import os
from typing import Dict, List, Optional, Sequence

_STATES = {0: "unknown", 1: "new", 2: "running", 3: "complete", 4: "failed", 5: "cached", 6: "canceled"}


def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _props(artifact) -> Dict[str, object]:
    out: Dict[str, object] = {}
    for source in (artifact.properties, artifact.custom_properties):
        for key, value in source.items():
            kind = value.WhichOneof("value")
            out[key] = getattr(value, kind) if kind else None
    return out


def _store(config):
    import ml_metadata as mlmd
    from ml_metadata.proto import metadata_store_pb2

    connection = metadata_store_pb2.ConnectionConfig()
    connection.sqlite.filename_uri = config.metadata_path
    connection.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    return mlmd.MetadataStore(connection)


def run_nodes(config, run_id: str) -> Dict[str, Dict[str, object]]:
    """{node id: {state, execution_id, outputs: {key: [{id, uri, type, props}]}}} for one run."""
    from ml_metadata.proto import metadata_store_pb2

    store = _store(config)
    context = store.get_context_by_type_and_name("pipeline_run", run_id)
    if context is None:
        return {}
    executions = store.get_executions_by_context(context.id)
    types = {t.id: t.name for t in store.get_artifact_types()}
    nodes: Dict[str, Dict[str, object]] = {}
    for execution in sorted(executions, key=lambda e: e.id):
        node = None
        for c in store.get_contexts_by_execution(execution.id):
            if store.get_context_types_by_id([c.type_id])[0].name == "node":
                node = c.name.split(".", 1)[-1]
        events = store.get_events_by_execution_ids([execution.id])
        outputs: Dict[str, List[Dict[str, object]]] = {}
        ids = [e.artifact_id for e in events if e.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)]
        by_id = {a.id: a for a in store.get_artifacts_by_id(ids)} if ids else {}
        for event in events:
            if event.artifact_id not in by_id:
                continue
            key = event.path.steps[0].key if event.path.steps else "out"
            a = by_id[event.artifact_id]
            outputs.setdefault(key, []).append({"id": a.id, "uri": a.uri, "type": types.get(a.type_id, "?"), "props": _props(a)})
        nodes[node or f"execution{execution.id}"] = {
            "state": _STATES.get(execution.last_known_state, str(execution.last_known_state)),
            "execution_id": execution.id, "outputs": outputs}
    return nodes


def _statistics(uri: str) -> Dict[str, Dict[str, object]]:
    """{split: {examples, mean num_frames, mean duration}} from a StatisticsGen artifact."""
    out: Dict[str, Dict[str, object]] = {}
    try:
        from tensorflow_metadata.proto.v0 import statistics_pb2
    except ImportError:
        return out
    for path in sorted(glob.glob(os.path.join(uri, "Split-*", "FeatureStats.pb"))):
        split = os.path.basename(os.path.dirname(path))[len("Split-"):]
        stats = statistics_pb2.DatasetFeatureStatisticsList()
        with open(path, "rb") as f:
            stats.ParseFromString(f.read())
        if not stats.datasets:
            continue
        dataset = stats.datasets[0]
        entry: Dict[str, object] = {"examples": int(dataset.num_examples)}
        for feature in dataset.features:
            name = feature.path.step[0] if feature.path.step else feature.name
            if name in ("num_frames", "duration") and feature.HasField("num_stats"):
                entry[f"{name}_mean"] = round(feature.num_stats.mean, 3)
                entry[f"{name}_max"] = round(feature.num_stats.max, 3)
        out[split] = entry
    return out


def collect(config, run_id: str, error: Optional[BaseException] = None, data_key: str = "",
            fingerprints: Sequence[str] = (), wall_seconds: float = 0.0, progress: Sequence[dict] = ()) -> Dict[str, object]:
    """Everything the report and the CLI print, for one run."""
    try:
        nodes = run_nodes(config, run_id)
    except Exception as e:  # noqa: BLE001 - a report must come out even when MLMD is unreadable
        nodes = {"_error": {"state": "unknown", "outputs": {}, "error": str(e)}}
    summary: Dict[str, object] = {
        "run_id": run_id, "status": "failed" if error else "succeeded",
        "error": (f"{type(error).__name__}: {error}" if error else None),
        "home": config.home_abs, "spans": list(config.spans), "fingerprints": list(fingerprints),
        "data_key": data_key, "wall_seconds": round(wall_seconds, 1), "tracking_uri": config.registry_uri,
        "nodes": {n: {"state": v["state"]} for n, v in nodes.items()}, "progress": list(progress),
    }
    # Resolvers are not components: they query ML Metadata on every run and are never cached.
    executed = [n for n, v in nodes.items() if v["state"] == "complete" and not n.endswith("Resolver")]
    summary["executed"] = executed
    summary["cached"] = [n for n, v in nodes.items() if v["state"] == "cached"]
    spans = []
    for node, info in sorted(nodes.items()):
        if node.startswith("FeatureGen_span"):
            for a in info["outputs"].get("examples", []):
                p = a["props"]
                spans.append({"span": p.get("span"), "examples_id": a["id"], "uri": a["uri"], "input": p.get("input_path"),
                              "good": json.loads(p.get("good") or "{}"), "dead_letter": json.loads(p.get("dead_letter") or "{}"),
                              "audio_hours": p.get("audio_hours")})
    summary["data"] = sorted(spans, key=lambda s: s["span"] if s["span"] is not None else -1)
    stats = {}
    for node, info in nodes.items():
        if node.startswith("StatisticsGen_span"):
            for a in info["outputs"].get("statistics", []):
                stats[node[len("StatisticsGen_span"):]] = _statistics(a["uri"])
    summary["statistics"] = stats
    validation = {}
    for node, info in nodes.items():
        if node.startswith("ValidationGate_span"):
            for a in info["outputs"].get("result", []):
                validation[node[len("ValidationGate_span"):]] = _read_json(os.path.join(a["uri"], "validation.json"))
    if error is not None and "failed validation" in str(error):
        summary["gate"] = str(error).split("failed validation, nothing is trained or pushed: ")[-1]
    summary["validation"] = validation
    trainer = nodes.get("Trainer", {}).get("outputs", {}).get("model", [])
    if trainer:
        serving = os.path.join(trainer[0]["uri"], "Format-Serving")
        summary["training"] = _read_json(os.path.join(serving, "training_result.json"))
        summary["warm_start"] = _read_json(os.path.join(serving, "warm_start.json"))
        summary["model_id"] = trainer[0]["id"]
    blessing = nodes.get("SpeechEvaluator", {}).get("outputs", {}).get("blessing", [])
    if blessing:
        summary["evaluation"] = _read_json(os.path.join(blessing[0]["uri"], "evaluation.json"))
    pushed = nodes.get("RegistryPusher", {}).get("outputs", {}).get("pushed_model", [])
    if pushed:
        summary["push"] = _read_json(os.path.join(pushed[0]["uri"], "push.json"))
    summary["outcome"] = _outcome(summary)
    return summary


def _outcome(summary: Dict[str, object]) -> str:
    if summary.get("gate"):
        return f"stopped at the validation gate, nothing trained or pushed: {summary['gate']}"
    if summary["status"] == "failed":
        return f"failed: {summary['error']}"
    push = summary.get("push")
    if push and summary["nodes"].get("RegistryPusher", {}).get("state") == "cached":
        return (f"nothing new, nothing pushed: the model and its blessing are unchanged and the pusher came from "
                f"the ML Metadata cache (its result in run {push.get('pipeline_run_id')}: {push.get('why', '')})")
    if push:
        return push.get("why", "")
    return "no push recorded"


def summary_lines(summary: Dict[str, object]) -> List[str]:
    lines = [f"[run] {summary['run_id']}: {summary['status']} in {summary['wall_seconds']:.0f} s; "
             f"{len(summary['executed'])} node(s) executed, {len(summary['cached'])} from the cache"]
    for s in summary.get("data", []):
        lines.append(f"[run]   span {s['span']}: good {s['good']}, dead-lettered {s['dead_letter'].get('total', 0)} "
                     f"{s['dead_letter'].get('by_reason', {})}")
    training = summary.get("training") or {}
    if training:
        warm = (summary.get("warm_start") or {}).get("reason", "")
        lines.append(f"[run]   CTC: {training.get('epochs')} epochs in {training.get('train_minutes')} min, best validation "
                     f"PER {training.get('best_val_per', float('nan')):.4f} ({warm})")
    evaluation = summary.get("evaluation") or {}
    if evaluation:
        champ = evaluation.get("champion")
        lines.append(f"[run]   test PER {evaluation['candidate']['per']:.4f}"
                     + (f" vs champion (model {champ['model_id']}) {champ['per']:.4f}" if champ else " (no champion yet)"))
    lines.append(f"[run]   outcome: {summary['outcome']}")
    if summary.get("report"):
        lines.append(f"[run]   report: {summary['report']}")
    return lines


# ------------------------------------------------------------------------------- writing

def _plots(summary: Dict[str, object], folder: str) -> Dict[str, str]:
    out: Dict[str, str] = {}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return out
    history = (summary.get("training") or {}).get("history") or []
    if history:
        fig, ax1 = plt.subplots(figsize=(6, 3.2))
        epochs = [h["epoch"] for h in history]
        ax1.plot(epochs, [h["loss"] for h in history], "b-o", ms=3, label="training CTC loss")
        ax1.set_xlabel("epoch")
        ax1.set_ylabel("CTC loss", color="b")
        ax2 = ax1.twinx()
        ax2.plot(epochs, [h["val_per"] for h in history], "r-s", ms=3, label="validation PER")
        ax2.set_ylabel("validation PER", color="r")
        ax1.set_title("CTC training")
        fig.tight_layout()
        out["training"] = os.path.join(folder, "training.png")
        fig.savefig(out["training"], dpi=100)
        plt.close(fig)
    evaluation = summary.get("evaluation") or {}
    if evaluation:
        names, values = ["candidate"], [evaluation["candidate"]["per"]]
        if evaluation.get("champion"):
            names.append("champion")
            values.append(evaluation["champion"]["per"])
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.bar(names, values, color=["tab:blue", "tab:gray"][: len(names)])
        ax.axhline(evaluation["thresholds"]["max_per"], color="r", ls="--", label="threshold")
        ax.set_ylabel("test PER")
        ax.legend()
        fig.tight_layout()
        out["per"] = os.path.join(folder, "per.png")
        fig.savefig(out["per"], dpi=100)
        plt.close(fig)
    return out


def write(config, summary: Dict[str, object]) -> str:
    """Writes reports/<run id>/report.md (+ PNGs, report.json); returns the Markdown's path."""
    folder = os.path.join(config.reports_dir, summary["run_id"])
    os.makedirs(folder, exist_ok=True)
    plots = _plots(summary, folder)
    md: List[str] = [f"# speechpipe run {summary['run_id']}", "",
                     f"**Status:** {summary['status']} in {summary['wall_seconds']:.0f} s  ",
                     f"**Outcome:** {summary['outcome']}  ",
                     f"**Home:** `{summary['home']}`  ", f"**Registry:** `{summary['tracking_uri']}`  ",
                     f"**Data key:** `{summary['data_key']}`", ""]
    if summary.get("error"):
        md += ["## Error", "", "```", str(summary["error"])[:4000], "```", ""]
    md += ["## Nodes", "", "| node | state |", "| --- | --- |"]
    md += [f"| {n} | {v['state']} |" for n, v in summary["nodes"].items()]
    md += ["", "## Data", "", "| span | input | train | validation | test | dead-lettered | reasons | hours |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in summary.get("data", []):
        g = s["good"]
        md.append(f"| {s['span']} | `{s['input']}` | {g.get('train', 0)} | {g.get('validation', 0)} | {g.get('test', 0)} | "
                  f"{s['dead_letter'].get('total', 0)} | {s['dead_letter'].get('by_reason', {})} | "
                  f"{(s.get('audio_hours') or 0):.3f} |")
    if summary.get("statistics"):
        md += ["", "### Statistics (StatisticsGen)", "", "| span | split | examples | mean frames | max frames | mean seconds |",
               "| --- | --- | --- | --- | --- | --- |"]
        for span, splits in sorted(summary["statistics"].items()):
            for split, e in splits.items():
                md.append(f"| {span} | {split} | {e.get('examples')} | {e.get('num_frames_mean', '')} | "
                          f"{e.get('num_frames_max', '')} | {e.get('duration_mean', '')} |")
    md += ["", "## Validation gate", ""]
    if summary.get("gate"):
        md.append(f"**Stopped:** {summary['gate']}")
    for span, verdict in sorted((summary.get("validation") or {}).items()):
        if verdict:
            md.append(f"- span {span}: {'passed' if verdict['passed'] else 'FAILED'}"
                      + (f" ({'; '.join(verdict['reasons'])})" if verdict["reasons"] else ""))
    training = summary.get("training")
    if training:
        md += ["", "## CTC training", "",
               f"{training['epochs']} epochs, {training['train_minutes']} min, best validation PER "
               f"{training['best_val_per']:.4f} at epoch {training['best_epoch']}. Warm start: "
               f"{(summary.get('warm_start') or {}).get('reason', '-')}. Inputs: {training.get('inputs')}", ""]
        if "training" in plots:
            md.append("![training curves](training.png)")
    evaluation = summary.get("evaluation")
    if evaluation:
        md += ["", "## Evaluation (fixed test split)", "",
               f"Test examples: span {evaluation['test_examples']['span']} (ML Metadata artifact {evaluation['test_examples']['id']}).", "",
               "| model | ML Metadata id | test PER | utterances |", "| --- | --- | --- | --- |",
               f"| candidate | {evaluation['candidate']['model_id']} | {evaluation['candidate']['per']:.4f} | {evaluation['candidate']['utterances']} |"]
        if evaluation.get("champion"):
            c = evaluation["champion"]
            md.append(f"| champion | {c['model_id']} | {c['per']:.4f} | {c['utterances']} |")
        md += ["", f"**Blessed:** {evaluation['blessed']} - {evaluation['why']}", ""]
        if "per" in plots:
            md.append("![PER](per.png)")
        samples = evaluation["candidate"].get("samples") or []
        if samples:
            md += ["", "| utterance | reference | candidate |", "| --- | --- | --- |"]
            md += [f"| {s['utterance']} | {s['reference']} | {s['hypothesis']} |" for s in samples]
    md += ["", "## Speaker embedder", "", "Not part of this run (the speaker branch is off): no EER, DET curve or projection.", ""]
    push = summary.get("push")
    md += ["## Registry push", ""]
    if push:
        md.append(summary["outcome"])
        if push.get("version"):
            md += ["", f"- model `{push['model_name']}` version {push['version']} (MLflow run {push['mlflow_run_id']})",
                   f"- tags: `{json.dumps(push.get('tags', {}), sort_keys=True)[:2000]}`"]
    else:
        md.append("Nothing pushed in this run.")
    path = os.path.join(folder, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(folder, "report.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1, default=str)
    return path
