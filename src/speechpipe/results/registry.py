"""The MLflow Model Registry: register a SavedModel version with its metrics and lineage, load it
back, smoke-test it through its serving signature, move the `champion` alias, list.

Embedded default: a SQLite tracking/registry database and a local artifact store under the home
folder (`<home>/mlflow/mlflow.db`, `<home>/mlflow/artifacts`). Any other tracking URI (an MLflow
server, `http://...`, or `databricks`) works by configuration alone: the server then decides where
artifacts go.

The alias moves only after the new version is registered, downloaded back from the registry and
has answered its serving signature; a version that fails the smoke test stays registered without
the alias, tagged `smoke_test=failed`.

Two runs may push to one registry at once. Who holds the alias is decided under `champion_lock`:
for the embedded SQLite registry an exclusive file lock (fcntl.flock) on `champion.lock` beside the
database, which every process on the machine that uses that home honours. A tracking server has no
lock to take, so `move_champion` is a compare-and-set on the registry instead: the holder is read
again just before the alias is set and once more after it; two pushers that both read the holder
in the few milliseconds between another's read and set can still both set it, and the last one
wins having compared with the holder it read, not with the one it displaced.

Models and files may come from object storage (gs://, s3://: a TFX artifact URI); MLflow logs
artifacts from local folders only, so they are staged in a temporary folder first. An artifact
root on object storage (`gs://BUCKET/mlflow`) is handed to MLflow as it is.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional

from speechpipe.io import storage

CHAMPION = "champion"
EXPERIMENT = "speechpipe-pipeline"
LOCK_FILE = "champion.lock"
INIT_LOCK_FILE = "tables.lock"


class SmokeTestError(RuntimeError):
    """A registered version did not answer its serving signature as expected."""


def git_commit(path: Optional[str] = None) -> str:
    """The commit of the source tree speechpipe runs from, with '+dirty' for uncommitted changes;
    'unknown' for an installed package (a wheel, the image), which belongs to no checkout even
    when it sits inside one (a venv in the repository)."""
    here = os.path.abspath(__file__)
    path = path or os.path.dirname(here)
    try:
        tracked = subprocess.run(
            ["git", "-C", path, "ls-files", "--error-unmatch", here], capture_output=True, timeout=10
        )
        if tracked.returncode != 0:
            return "unknown"
        commit = subprocess.run(
            ["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", path, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def speechpipe_version() -> str:
    """The installed distribution's version: with the commit, what a registered model was made by."""
    from importlib import metadata

    try:
        return metadata.version("speechpipe")
    except metadata.PackageNotFoundError:
        return "unknown"


def _call_on_smoke_waveforms(saved_model_dir: str, signature: str, sample_rate: int):
    """Loads the SavedModel with TensorFlow alone and calls `signature` on two waveforms of
    different lengths, zero-padded into one batch: a one-second chirp and 0.75 s of noise."""
    import numpy as np
    import tensorflow as tf

    model = tf.saved_model.load(saved_model_dir)
    if signature not in model.signatures:
        raise SmokeTestError(f"{saved_model_dir}: no `{signature}` signature (has {list(model.signatures)})")
    rng = np.random.default_rng(0)
    n = sample_rate
    t = np.arange(n) / sample_rate
    chirp = (0.3 * np.sin(2 * np.pi * (200 + 400 * t) * t)).astype(np.float32)
    noise = (0.05 * rng.standard_normal(n)).astype(np.float32)
    lengths = np.array([n, n * 3 // 4], np.int32)
    noise[lengths[1] :] = 0
    return model.signatures[signature](waveforms=tf.constant(np.stack([chirp, noise])), lengths=tf.constant(lengths))


def smoke_test_transcriber(saved_model_dir: str, sample_rate: int = 16000) -> Dict[str, object]:
    """Loads the SavedModel with TensorFlow alone and calls its `transcribe` signature on two
    waveforms of different lengths (a chirp and noise); checks one phone string per row."""
    out = _call_on_smoke_waveforms(saved_model_dir, "transcribe", sample_rate)
    phones = out["phones"].numpy()
    if phones.shape != (2,):
        raise SmokeTestError(f"transcribe gave phones of shape {phones.shape} for 2 waveforms")
    return {"signature": "transcribe", "rows": 2, "phones": [p.decode("utf-8") for p in phones]}


def smoke_test_embedder(saved_model_dir: str, sample_rate: int = 16000) -> Dict[str, object]:
    """Loads the SavedModel with TensorFlow alone and calls its `embed` signature on two
    waveforms of different lengths (a chirp and noise); checks one finite embedding per row."""
    import numpy as np

    out = _call_on_smoke_waveforms(saved_model_dir, "embed", sample_rate)
    embeddings = out["embeddings"].numpy()
    if embeddings.ndim != 2 or embeddings.shape[0] != 2 or not np.isfinite(embeddings).all():
        raise SmokeTestError(
            f"embed gave {embeddings.shape} embeddings (finite: {np.isfinite(embeddings).all()}) for 2 waveforms"
        )
    return {
        "signature": "embed",
        "rows": 2,
        "dimension": int(embeddings.shape[1]),
        "num_segments": out["num_segments"].numpy().tolist(),
    }


SMOKE_TESTS = {"ctc": smoke_test_transcriber, "speaker": smoke_test_embedder}


@contextlib.contextmanager
def _exclusive(path: str) -> Iterator[None]:
    """An exclusive lock (fcntl.flock) on the file at `path`, honoured by every process on the
    machine; blocks until no other holds it."""
    import fcntl

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@dataclass
class Registered:
    name: str
    version: str
    run_id: str
    source: str


class Registry:
    """A thin layer over MlflowClient for the pipeline's models."""

    def __init__(self, tracking_uri: str, artifact_root: Optional[str] = None) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self._mlflow = mlflow
        folder = self._database_folder
        if folder is None:
            self.artifact_root = artifact_root
            self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            return
        os.makedirs(folder, exist_ok=True)
        self.artifact_root = os.path.join(folder, "artifacts") if artifact_root is None else artifact_root
        # MLflow creates and migrates an embedded database's tables on a process's first use
        # (the client's constructor opens the tracking store), without a lock of its own: two runs
        # pushing to a fresh home at once both migrated and one failed ("table
        # _alembic_tmp_experiments already exists"). Both stores are opened here under a lock;
        # later uses find the tables, and MLflow caches this process's stores.
        with _exclusive(os.path.join(folder, INIT_LOCK_FILE)):
            self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            self.client.search_registered_models(max_results=1)

    def _experiment_id(self) -> str:
        found = self.client.get_experiment_by_name(EXPERIMENT)
        if found is not None:
            return found.experiment_id
        location = None
        if self.artifact_root and storage.is_uri(self.artifact_root):
            location = self.artifact_root  # MLflow writes gs://, s3://, ... through its own stores
        elif self.artifact_root:
            os.makedirs(self.artifact_root, exist_ok=True)
            location = "file://" + os.path.abspath(self.artifact_root)
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(EXPERIMENT, artifact_location=location)
        except MlflowException:
            found = self.client.get_experiment_by_name(EXPERIMENT)  # another pusher created it first
            if found is None:
                raise
            return found.experiment_id

    def register(
        self,
        name: str,
        model_dir: str,
        metrics: Dict[str, float],
        tags: Dict[str, str],
        params: Optional[Dict[str, object]] = None,
        files: Optional[Dict[str, str]] = None,
    ) -> Registered:
        """Logs an MLflow run holding the SavedModel (+ `files`: {artifact path: file}) and
        registers it as a new version of `name`, with the tags on both run and version. The
        model folder and the files are local paths or URIs."""
        from mlflow.exceptions import MlflowException

        run = self.client.create_run(
            self._experiment_id(), tags={**tags, "mlflow.runName": tags.get("pipeline_run_id", name)}
        )
        run_id = run.info.run_id
        try:
            for key, value in sorted(metrics.items()):
                if value is not None and value == value:
                    self.client.log_metric(run_id, key, float(value))
            for key, value in sorted((params or {}).items()):
                self.client.log_param(run_id, key, str(value)[:6000])
            # MLflow's log_artifact(s) read local files only: a model or file on object storage is
            # staged in a temporary folder (a model is a few MB).
            with tempfile.TemporaryDirectory() as staging:
                local_model = (
                    storage.copy_tree_to_local(model_dir, os.path.join(staging, "model"))
                    if storage.is_uri(model_dir)
                    else model_dir
                )
                self.client.log_artifacts(run_id, local_model, "model")
                for artifact_path, path in (files or {}).items():
                    local = path
                    if storage.is_uri(path):
                        local = os.path.join(staging, "files", artifact_path, storage.basename(path))
                        os.makedirs(os.path.dirname(local), exist_ok=True)
                        with open(local, "wb") as f:
                            f.write(storage.read_bytes(path))
                    self.client.log_artifact(run_id, local, artifact_path)
            self.client.set_terminated(run_id, "FINISHED")
        except Exception:
            self.client.set_terminated(run_id, "FAILED")
            raise
        try:
            self.client.create_registered_model(name, description="speechpipe: blessed by the TFX pipeline")
        except MlflowException:
            pass  # already there
        source = f"{run.info.artifact_uri}/model"
        version = self.client.create_model_version(name, source, run_id=run_id, tags=tags)
        return Registered(name=name, version=str(version.version), run_id=run_id, source=source)

    def download(self, name: str, version: str, dst: str) -> str:
        """The version's SavedModel, downloaded back from the registry's artifact store."""
        os.makedirs(dst, exist_ok=True)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        # Resolved through this client's registry (a models:/ URI would use the process-wide one).
        uri = self.client.get_model_version_download_uri(name, version)
        return self._mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst, tracking_uri=self.tracking_uri)

    def set_champion(self, name: str, version: str) -> None:
        self.client.set_registered_model_alias(name, CHAMPION, version)

    @property
    def _database_folder(self) -> Optional[str]:
        """The folder of an embedded (SQLite) registry's database; None for a tracking server."""
        if not self.tracking_uri.startswith("sqlite:///"):
            return None
        return os.path.dirname(self.tracking_uri[len("sqlite:///") :]) or "."

    @property
    def lock_path(self) -> Optional[str]:
        """The lock file of an embedded (SQLite) registry, beside its database; None for a server."""
        folder = self._database_folder
        return None if folder is None else os.path.join(folder, LOCK_FILE)

    @contextlib.contextmanager
    def champion_lock(self) -> Iterator[Optional[str]]:
        """Holds the registry's champion lock (yields its path), blocking until no other process
        holds it; for a tracking server there is none to take (yields None): `move_champion`'s
        compare-and-set is then all the protection there is."""
        path = self.lock_path
        if path is None:
            yield None
            return
        with _exclusive(path):
            yield path

    def move_champion(self, name: str, version: str, expected: Optional[str]) -> Optional[str]:
        """Compare-and-set: moves the alias to `version` only while `expected` holds it (None: no
        version does). Returns the holder read back afterwards: `version` when it moved and no
        one moved it since, else the version that holds it now (or None)."""
        current = self.champion(name)
        if current != expected:
            return current
        self.set_champion(name, version)
        return self.champion(name)

    def champion(self, name: str) -> Optional[str]:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, CHAMPION).version)
        except MlflowException:
            return None

    def tag_version(self, name: str, version: str, key: str, value: str) -> None:
        self.client.set_model_version_tag(name, version, key, value)

    def list(self) -> List[Dict[str, object]]:
        """Every registered model: its versions (newest first) with aliases, tags and metrics."""
        out = []
        for model in self.client.search_registered_models():
            versions = []
            for v in sorted(self.client.search_model_versions(f"name='{model.name}'"), key=lambda v: -int(v.version)):
                metrics: Dict[str, float] = {}
                if v.run_id:
                    try:
                        metrics = dict(self.client.get_run(v.run_id).data.metrics)
                    except Exception:  # the run may live elsewhere
                        metrics = {}
                versions.append(
                    {
                        "version": str(v.version),
                        "aliases": list(getattr(v, "aliases", []) or []),
                        "tags": dict(v.tags),
                        "metrics": metrics,
                        "run_id": v.run_id,
                        "source": v.source,
                        "created": v.creation_timestamp,
                    }
                )
            out.append(
                {
                    "name": model.name,
                    "versions": versions,
                    "aliases": {k: str(v) for k, v in (getattr(model, "aliases", {}) or {}).items()},
                }
            )
        return out


def format_listing(models: List[Dict[str, object]]) -> str:
    """`speechpipe registry list` as text."""
    if not models:
        return "no registered models"
    lines = []
    for model in models:
        lines.append(
            f"{model['name']}  aliases: " + (", ".join(f"{k}=v{v}" for k, v in sorted(model["aliases"].items())) or "-")
        )
        for v in model["versions"]:
            metrics = ", ".join(f"{k}={val:.4f}" for k, val in sorted(v["metrics"].items()))
            tags = v["tags"]
            aliases = f" [{', '.join(v['aliases'])}]" if v["aliases"] else ""
            lines.append(
                f"  v{v['version']}{aliases}  {metrics or 'no metrics'}  spans={tags.get('data_spans', '?')}"
                f"  run={tags.get('pipeline_run_id', '?')}  commit={tags.get('git_commit', '?')[:12]}"
                f"  smoke_test={tags.get('smoke_test', '?')}"
            )
    return "\n".join(lines)
