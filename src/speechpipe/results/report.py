"""The run report: what every node did (executed or cached), data statistics and dead letters, the
validation verdicts, training curves, PER and EER (candidate vs champion) with the DET curve and
the embedding projection, what was pushed and why.

`collect` reads one pipeline run back from ML Metadata (the executions in the run's
`pipeline_run` context, their node contexts and output artifacts) and the small JSON files the
components write next to their artifacts; `write` turns it into Markdown with PNG plots under
`<home>/reports/<run id>/` (report.md, report.json, *.png). The artifacts are read through TFX's
fileio, so a pipeline root on object storage is read like a local one.

Why one module of this size: `collect` and `write` share the report's one schema (report.json is
what `write` renders), and every section is a short function over it; the plots are matplotlib
one-liners next to the section that shows them.
"""

from __future__ import annotations

import json
import os
import re
from typing import Dict, List, Optional, Sequence

from speechpipe.filenames import SPLIT_PREFIX, split_of
from speechpipe.io import storage

_STATES = {0: "unknown", 1: "new", 2: "running", 3: "complete", 4: "failed", 5: "cached", 6: "canceled"}


def _read_json(path: str) -> Optional[dict]:
    """A component's JSON file (local or URI), or None when it is missing or unreadable."""
    try:
        return storage.read_json(path)
    except Exception:  # gfile raises tf.errors (NotFoundError, ...), not OSError
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
        ids = [
            e.artifact_id
            for e in events
            if e.type in (metadata_store_pb2.Event.OUTPUT, metadata_store_pb2.Event.DECLARED_OUTPUT)
        ]
        by_id = {a.id: a for a in store.get_artifacts_by_id(ids)} if ids else {}
        for event in events:
            if event.artifact_id not in by_id:
                continue
            key = event.path.steps[0].key if event.path.steps else "out"
            a = by_id[event.artifact_id]
            outputs.setdefault(key, []).append(
                {"id": a.id, "uri": a.uri, "type": types.get(a.type_id, "?"), "props": _props(a)}
            )
        nodes[node or f"execution{execution.id}"] = {
            "state": _STATES.get(execution.last_known_state, str(execution.last_known_state)),
            "execution_id": execution.id,
            "outputs": outputs,
        }
    return nodes


def _statistics(uri: str) -> Dict[str, Dict[str, object]]:
    """{split: {examples, mean num_frames, mean duration}} from a StatisticsGen artifact."""
    out: Dict[str, Dict[str, object]] = {}
    try:
        from tensorflow_metadata.proto.v0 import statistics_pb2
    except ImportError:
        return out
    for path in storage.glob(storage.join(uri, SPLIT_PREFIX + "*", "FeatureStats.pb")):
        split = split_of(storage.basename(storage.dirname(path)))
        stats = statistics_pb2.DatasetFeatureStatisticsList()
        stats.ParseFromString(storage.read_bytes(path))
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


# The feature nodes of a span, by kind: the CTC branch's feature set with "CTC" in front, the
# embedder's own feature set on a span of its own with "Speaker" (pipeline/tfx_pipeline.py).
_SPAN_NODE = re.compile(r"^(CTC|Speaker)(FeatureGen|StatisticsGen|ValidationGate)_span(\d+)$")


def _span_nodes(nodes: Dict[str, Dict[str, object]], kind: str) -> Dict[int, Dict[str, object]]:
    """{span: node} for one kind of span node; where both feature sets have one, the CTC one."""
    found: Dict[int, Dict[str, object]] = {}
    for node in sorted(nodes, key=lambda n: n.startswith("Speaker")):
        m = _SPAN_NODE.match(node)
        if m and m.group(2) == kind and int(m.group(3)) not in found:
            found[int(m.group(3))] = nodes[node]
    return found


def collect(
    config,
    run_id: str,
    error: Optional[BaseException] = None,
    data_key=None,
    fingerprints: Sequence[str] = (),
    wall_seconds: float = 0.0,
    progress: Sequence[dict] = (),
) -> Dict[str, object]:
    """Everything the report and the CLI print, for one run. `data_key`: the branches' data keys
    ({branch: key}); `progress`: what happened to each node as the run went (local_dag's outcomes,
    including the nodes skipped after a failure, which ML Metadata never sees)."""
    try:
        nodes = run_nodes(config, run_id)
    except Exception as e:  # a report must come out even when MLMD is unreadable
        nodes = {"_error": {"state": "unknown", "outputs": {}, "error": str(e)}}
    keys = data_key if isinstance(data_key, dict) else ({"ctc": data_key} if data_key else {})
    summary: Dict[str, object] = {
        "run_id": run_id,
        "status": "failed" if error else "succeeded",
        "error": (f"{type(error).__name__}: {error}" if error else None),
        "home": config.home_abs,
        "spans": list(config.all_spans),
        "fingerprints": list(fingerprints),
        "branches": list(config.branches),
        "branch_spans": {b: list(config.span_numbers(b)) for b in config.branches},
        "data_key": keys.get("ctc", ""),
        "data_keys": keys,
        "wall_seconds": round(wall_seconds, 1),
        "tracking_uri": config.registry_uri,
        "nodes": {n: {"state": v["state"]} for n, v in nodes.items()},
        "progress": list(progress),
    }
    # Resolvers are not components: they query ML Metadata on every run and are never cached.
    executed = [n for n, v in nodes.items() if v["state"] == "complete" and not n.endswith("Resolver")]
    summary["executed"] = executed
    summary["cached"] = [n for n, v in nodes.items() if v["state"] == "cached"]
    summary["skipped"] = {p["node"]: p.get("why", "") for p in progress if p.get("how") == "skipped"}
    spans = []
    for span, info in sorted(_span_nodes(nodes, "FeatureGen").items()):
        for a in info["outputs"].get("examples", []):
            p = a["props"]
            spans.append(
                {
                    "span": p.get("span", span),
                    "examples_id": a["id"],
                    "uri": a["uri"],
                    "input": p.get("input_path"),
                    "good": json.loads(p.get("good") or "{}"),
                    "dead_letter": json.loads(p.get("dead_letter") or "{}"),
                    "audio_hours": p.get("audio_hours"),
                }
            )
    summary["data"] = sorted(spans, key=lambda s: s["span"] if s["span"] is not None else -1)
    summary["statistics"] = {
        str(span): _statistics(a["uri"])
        for span, info in _span_nodes(nodes, "StatisticsGen").items()
        for a in info["outputs"].get("statistics", [])
    }
    summary["validation"] = {
        str(span): _read_json(storage.join(a["uri"], "validation.json"))
        for span, info in _span_nodes(nodes, "ValidationGate").items()
        for a in info["outputs"].get("result", [])
    }
    failed_gates = {
        p["node"]: p.get("error", "")
        for p in progress
        if p.get("how") == "failed" and "ValidationGate_span" in p["node"]
    }
    if failed_gates:
        summary["gate"] = "; ".join(failed_gates.values())
    if config.include_ctc:
        trainer = nodes.get("CTCTrainer", {}).get("outputs", {}).get("model", [])
        if trainer:
            serving = storage.join(trainer[0]["uri"], "Format-Serving")
            summary["training"] = _read_json(storage.join(serving, "training_result.json"))
            summary["warm_start"] = (summary["training"] or {}).get("warm_start")
            summary["model_id"] = trainer[0]["id"]
        blessing = nodes.get("CTCEvaluator", {}).get("outputs", {}).get("blessing", [])
        if blessing:
            summary["evaluation"] = _read_json(storage.join(blessing[0]["uri"], "evaluation.json"))
        pushed = nodes.get("CTCRegistryPusher", {}).get("outputs", {}).get("pushed_model", [])
        if pushed:
            summary["push"] = _read_json(storage.join(pushed[0]["uri"], "push.json"))
        summary["outcome"] = _branch_outcome(summary, "CTCRegistryPusher", summary.get("push"))
    else:
        summary["outcome"] = "the CTC branch is off (--branches speaker): nothing trained or pushed"
    if config.include_speaker:
        summary["speaker"] = _speaker(nodes, summary)
    return summary


def _speaker(nodes: Dict[str, Dict[str, object]], summary: Dict[str, object]) -> Dict[str, object]:
    """The speaker branch's training, evaluation (with its PNGs) and push, and its outcome."""
    out: Dict[str, object] = {}
    model = nodes.get("SpeakerTrainer", {}).get("outputs", {}).get("model", [])
    if model:
        out["training"] = _read_json(storage.join(model[0]["uri"], "Format-Serving", "training_result.json"))
        out["model_id"] = model[0]["id"]
    blessing = nodes.get("SpeakerEvaluator", {}).get("outputs", {}).get("blessing", [])
    if blessing:
        out["evaluation"] = _read_json(storage.join(blessing[0]["uri"], "evaluation.json"))
        out["blessing_uri"] = blessing[0]["uri"]
    pushed = nodes.get("SpeakerRegistryPusher", {}).get("outputs", {}).get("pushed_model", [])
    if pushed:
        out["push"] = _read_json(storage.join(pushed[0]["uri"], "push.json"))
    out["outcome"] = _branch_outcome(summary, "SpeakerRegistryPusher", out.get("push"))
    return out


def _branch_outcome(summary: Dict[str, object], pusher: str, push: Optional[dict]) -> str:
    """One branch's outcome, read from its pusher: what it pushed and why, or the failure that
    stopped the branch before it (a failed gate, trainer, evaluator: the first failed node
    upstream, which the pusher's skip names)."""
    progress = {p["node"]: p for p in summary.get("progress", [])}
    entry = progress.get(pusher)
    if entry is None and summary["status"] == "failed":
        return f"failed: {summary['error']}"  # the run stopped before its nodes ran
    if entry is not None and entry.get("how") in ("skipped", "failed"):
        culprit = entry["why"][: -len(" failed")] if entry.get("how") == "skipped" else pusher
        error = progress.get(culprit, {}).get("error", "")
        if "ValidationGate_span" in culprit:
            return f"stopped at the validation gate ({culprit}), nothing trained or pushed: {error}"
        return f"failed at {culprit}: {error}"
    state = summary["nodes"].get(pusher, {}).get("state")
    if push and state == "cached":
        return (
            f"nothing new, nothing pushed: the model and its blessing are unchanged and the pusher came from "
            f"the ML Metadata cache (its result in run {push.get('pipeline_run_id')}: {push.get('why', '')})"
        )
    if push:
        return push.get("why", "")
    return "no push recorded"


def summary_lines(summary: Dict[str, object]) -> List[str]:
    lines = [
        f"[run] {summary['run_id']}: {summary['status']} in {summary['wall_seconds']:.0f} s; "
        f"{len(summary['executed'])} node(s) executed, {len(summary['cached'])} from the cache"
    ]
    for s in summary.get("data", []):
        lines.append(
            f"[run]   span {s['span']}: good {s['good']}, dead-lettered {s['dead_letter'].get('total', 0)} "
            f"{s['dead_letter'].get('by_reason', {})}"
        )
    training = summary.get("training") or {}
    if training:
        warm = (summary.get("warm_start") or {}).get("reason", "")
        lines.append(
            f"[run]   CTC: {training.get('epochs')} epochs in {training.get('train_minutes')} min, best validation "
            f"PER {training.get('best_val_per', float('nan')):.4f} ({warm})"
        )
    evaluation = summary.get("evaluation") or {}
    if evaluation:
        champ = evaluation.get("champion")
        with_lm = evaluation["candidate"].get("per_lm")
        lines.append(
            f"[run]   test PER {evaluation['candidate']['per']:.4f}"
            + (f" (with the phone LM {with_lm:.4f})" if with_lm is not None else "")
            + (f" vs champion (model {champ['model_id']}) {champ['per']:.4f}" if champ else " (no champion yet)")
        )
    lines.append(f"[run]   outcome: {summary['outcome']}")
    speaker = summary.get("speaker") or {}
    s_train, s_eval = speaker.get("training") or {}, speaker.get("evaluation") or {}
    if s_train:
        lines.append(
            f"[run]   speaker embedder: {s_train.get('steps')} steps in {s_train.get('train_seconds', 0) / 60:.1f} min, "
            f"best validation EER {100 * s_train.get('best_val_eer', float('nan')):.2f} % "
            f"({(s_train.get('warm_start') or {}).get('reason', '')})"
        )
    if s_eval:
        c, champ = s_eval["candidate"], s_eval.get("champion")
        lines.append(
            f"[run]   test EER {100 * c['eer']:.2f} %, minDCF {c['min_dcf']:.3f}, MR {c['mr']:.3f} "
            f"({c['speakers']} unseen speakers)"
            + (
                f" vs champion (model {champ['model_id']}) EER {100 * champ['eer']:.2f} %"
                if champ
                else " (no champion yet)"
            )
        )
    operating = (s_eval or {}).get("operating_point") or {}
    if operating.get("threshold") is not None:
        lines.append(
            f"[run]   decision threshold {operating['threshold']:.4f} ({operating['source']}): on the test "
            f"speakers FAR {100 * operating['test_far']:.2f} %, FRR {100 * operating['test_frr']:.2f} %"
        )
    if speaker:
        lines.append(f"[run]   speaker outcome: {speaker.get('outcome')}")
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


def _speaker_markdown(speaker: Optional[Dict[str, object]], folder: str) -> List[str]:
    md = ["", "## Speaker embedder", ""]
    if speaker is None:
        return md + ["Not part of this run (`--branches ctc`): no EER, DET curve or projection.", ""]
    training = speaker.get("training") or {}
    if training:
        md += [
            f"{training.get('steps')} steps ({training.get('segments_seen')} segments) in "
            f"{training.get('train_seconds', 0) / 60:.1f} min; best validation EER "
            f"{100 * training.get('best_val_eer', float('nan')):.2f} % at step {training.get('best_step')}; "
            f"clustering threshold {training.get('cluster_threshold')}. Warm start: "
            f"{(training.get('warm_start') or {}).get('reason', '-')}. Inputs: {training.get('inputs')}",
            "",
        ]
        history = training.get("history") or []
        if history:
            md += [
                "| step | minutes | training loss | validation EER | validation minDCF |",
                "| --- | --- | --- | --- | --- |",
            ]
            md += [
                f"| {h['step']} | {h['seconds'] / 60:.1f} | {h['loss']:.4f} | {100 * h['val_eer']:.2f} % | "
                f"{h['val_min_dcf']:.3f} |"
                for h in history
            ]
            md.append("")
    evaluation = speaker.get("evaluation") or {}
    if evaluation:
        md += [
            f"Test speakers never seen in training: span {evaluation['test_examples']['span']}'s test split, trial list "
            f"{evaluation.get('trial_list', 'built from the test split')} (`{evaluation['trials']}`).",
            "",
            "| model | ML Metadata id | EER | minDCF | MR (k given) | ARI (k given) | MR (threshold) | clusters | trials |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name in ("candidate", "champion"):
            m = evaluation.get(name)
            if m:
                md.append(
                    f"| {name} | {m['model_id']} | {100 * m['eer']:.2f} % | {m['min_dcf']:.3f} | {m['mr']:.3f} | "
                    f"{m['ari']:.3f} | {m['mr_threshold']:.3f} | {m['clusters_threshold']} / {m['speakers']} | {m['trials']} |"
                )
        md += ["", f"**Blessed:** {evaluation['blessed']} - {evaluation['why']}", ""]
        operating = evaluation.get("operating_point") or {}
        if operating.get("threshold") is not None:
            md += [
                f"**Decision threshold shipped with the model:** {operating['threshold']:.4f}, {operating['source']}. "
                f"What a user gets on the test speakers: false accepts {100 * operating['test_far']:.2f} %, false "
                f"rejects {100 * operating['test_frr']:.2f} % (at the validation EER threshold "
                f"{operating['eer_threshold']:.4f}: {100 * operating['test_far_at_eer_threshold']:.2f} % / "
                f"{100 * operating['test_frr_at_eer_threshold']:.2f} %).",
                "",
            ]
        elif operating.get("why"):
            md += [f"**Decision threshold:** {operating['why']}", ""]
        source = speaker.get("blessing_uri") or ""
        for png, title in (("det.png", "DET curve"), ("candidate_embeddings.png", "test embeddings (t-SNE)")):
            if source and storage.exists(storage.join(source, png)):
                with open(os.path.join(folder, f"speaker_{png}"), "wb") as f:
                    f.write(storage.read_bytes(storage.join(source, png)))
                md += [f"![{title}](speaker_{png})", ""]
    push = speaker.get("push") or {}
    md += [f"**Push:** {speaker.get('outcome')}", ""]
    if push.get("version"):
        md += [f"- model `{push['model_name']}` version {push['version']} (MLflow run {push['mlflow_run_id']})", ""]
    return md


def write(config, summary: Dict[str, object]) -> str:
    """Writes reports/<run id>/report.md (+ PNGs, report.json); returns the Markdown's path."""
    folder = os.path.join(config.reports_dir, summary["run_id"])
    os.makedirs(folder, exist_ok=True)
    plots = _plots(summary, folder)
    md: List[str] = [
        f"# speechpipe run {summary['run_id']}",
        "",
        f"**Status:** {summary['status']} in {summary['wall_seconds']:.0f} s  ",
        f"**CTC outcome:** {summary['outcome']}  ",
    ]
    if summary.get("speaker"):
        md.append(f"**Speaker outcome:** {summary['speaker'].get('outcome')}  ")
    spans = summary.get("branch_spans") or {}
    md += [
        "**Branches:** "
        + ", ".join(
            f"{b} on span(s) {', '.join(str(s) for s in spans.get(b, []))}" for b in summary.get("branches", [])
        )
        + "  ",
        f"**Home:** `{summary['home']}`  ",
        f"**Registry:** `{summary['tracking_uri']}`  ",
        f"**Data keys:** `{json.dumps(summary.get('data_keys') or {}, sort_keys=True)}`",
        "",
    ]
    if summary.get("error"):
        md += ["## Error", "", "```", str(summary["error"])[:4000], "```", ""]
    md += ["## Nodes", "", "| node | state |", "| --- | --- |"]
    md += [f"| {n} | {v['state']} |" for n, v in summary["nodes"].items()]
    md += [f"| {n} | skipped: {why} |" for n, why in (summary.get("skipped") or {}).items()]
    md += [
        "",
        "## Data",
        "",
        "| span | input | train | validation | test | dead-lettered | reasons | hours |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in summary.get("data", []):
        g = s["good"]
        md.append(
            f"| {s['span']} | `{s['input']}` | {g.get('train', 0)} | {g.get('validation', 0)} | {g.get('test', 0)} | "
            f"{s['dead_letter'].get('total', 0)} | {s['dead_letter'].get('by_reason', {})} | "
            f"{(s.get('audio_hours') or 0):.3f} |"
        )
    if summary.get("statistics"):
        md += [
            "",
            "### Statistics (StatisticsGen)",
            "",
            "| span | split | examples | mean frames | max frames | mean seconds |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for span, splits in sorted(summary["statistics"].items()):
            for split, e in splits.items():
                md.append(
                    f"| {span} | {split} | {e.get('examples')} | {e.get('num_frames_mean', '')} | "
                    f"{e.get('num_frames_max', '')} | {e.get('duration_mean', '')} |"
                )
    md += ["", "## Validation gate", ""]
    if summary.get("gate"):
        md.append(f"**Stopped:** {summary['gate']}")
    for span, verdict in sorted((summary.get("validation") or {}).items()):
        if verdict:
            md.append(
                f"- span {span}: {'passed' if verdict['passed'] else 'FAILED'}"
                + (f" ({'; '.join(verdict['reasons'])})" if verdict["reasons"] else "")
            )
    training = summary.get("training")
    if training:
        md += [
            "",
            "## CTC training",
            "",
            f"{training['epochs']} epochs, {training['train_minutes']} min, best validation PER "
            f"{training['best_val_per']:.4f} at epoch {training['best_epoch']}. Warm start: "
            f"{(summary.get('warm_start') or {}).get('reason', '-')}. Inputs: {training.get('inputs')}",
            "",
        ]
        if "training" in plots:
            md.append("![training curves](training.png)")
    evaluation = summary.get("evaluation")
    if evaluation:
        md += [
            "",
            "## Evaluation (fixed test split)",
            "",
            f"Test examples: span {evaluation['test_examples']['span']} (ML Metadata artifact {evaluation['test_examples']['id']}).",
            "",
            "| model | ML Metadata id | test PER (greedy, gated) | test PER with the phone LM | utterances |",
            "| --- | --- | --- | --- | --- |",
        ]
        rows = [("candidate", evaluation["candidate"])] + (
            [("champion", evaluation["champion"])] if evaluation.get("champion") else []
        )
        for role, c in rows:
            with_lm = f"{c['per_lm']:.4f}" if c.get("per_lm") is not None else "-"
            md.append(f"| {role} | {c['model_id']} | {c['per']:.4f} | {with_lm} | {c['utterances']} |")
        md += ["", f"**Blessed:** {evaluation['blessed']} - {evaluation['why']}", ""]
        if "per" in plots:
            md.append("![PER](per.png)")
        samples = evaluation["candidate"].get("samples") or []
        if samples:
            md += ["", "| utterance | reference | candidate |", "| --- | --- | --- |"]
            md += [f"| {s['utterance']} | {s['reference']} | {s['hypothesis']} |" for s in samples]
    md += _speaker_markdown(summary.get("speaker"), folder)
    push = summary.get("push")
    md += ["## Registry push", ""]
    if push:
        md.append(summary["outcome"])
        if push.get("version"):
            md += [
                "",
                f"- model `{push['model_name']}` version {push['version']} (MLflow run {push['mlflow_run_id']})",
                f"- tags: `{json.dumps(push.get('tags', {}), sort_keys=True)[:2000]}`",
            ]
    else:
        md.append("Nothing pushed in this run.")
    path = os.path.join(folder, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")
    with open(os.path.join(folder, "report.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1, default=str)
    return path
