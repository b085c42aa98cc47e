"""A model reference, as a user writes it, to the SavedModel on local disk.

    models:/NAME@ALIAS      a registry alias (the default: models:/speechpipe-embedder@champion)
    models:/NAME/VERSION    a registry version
    FOLDER                  a SavedModel, or a version as the registry stores it

A registry version is an MLflow model folder (`MLmodel`, the pyfunc flavor) holding the SavedModel
under `artifacts/saved_model`; versions pushed before the flavor existed are the SavedModel
itself. Both resolve. The version's tags (the speaker model's decision threshold among them) come
along, so a command can say where its threshold came from.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict

SAVED_MODEL_DIR = os.path.join("artifacts", "saved_model")  # inside an MLflow model folder
_REFERENCE = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class ModelNotFound(ValueError):
    """A reference names no model: no such folder, registry model, alias or version."""


@dataclass
class ResolvedModel:
    """A model ready to load: its SavedModel folder and where it came from."""

    saved_model_dir: str
    reference: str
    name: str = ""
    version: str = ""
    tags: Dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return f"{self.name} v{self.version} ({self.reference})" if self.version else self.reference


def saved_model_in(folder: str) -> str:
    """The SavedModel of a folder: an MLflow model folder's artifact, or the folder itself."""
    if os.path.isfile(os.path.join(folder, "MLmodel")):
        import yaml

        with open(os.path.join(folder, "MLmodel"), encoding="utf-8") as f:
            flavor = (yaml.safe_load(f).get("flavors") or {}).get("python_function") or {}
        listed = ((flavor.get("artifacts") or {}).get("saved_model") or {}).get("path", SAVED_MODEL_DIR)
        inner = os.path.join(folder, listed)
        if os.path.isfile(os.path.join(inner, "saved_model.pb")):
            return inner
        raise ModelNotFound(f"{folder}: an MLflow model without a SavedModel at {SAVED_MODEL_DIR}")
    if os.path.isfile(os.path.join(folder, "saved_model.pb")):
        return folder
    raise ModelNotFound(f"{folder}: neither a SavedModel (saved_model.pb) nor an MLflow model (MLmodel)")


def resolve(reference: str, tracking_uri: str, cache_dir: str) -> ResolvedModel:
    """The local SavedModel of `reference`; a registry version is downloaded once into
    `cache_dir/<name>/<version>` (versions never change, so the copy stays valid)."""
    match = _REFERENCE.match(reference)
    if match is None:
        if os.path.isdir(reference):
            return ResolvedModel(saved_model_in(reference), reference)
        raise ModelNotFound(f"model {reference!r}: no such folder, and not models:/NAME@ALIAS or models:/NAME/VERSION")
    from mlflow.exceptions import MlflowException

    from speechpipe.results.registry import Registry

    if tracking_uri.startswith("sqlite:///") and not os.path.exists(tracking_uri[len("sqlite:///") :]):
        raise ModelNotFound(
            f"model {reference!r}: no registry at {tracking_uri} (nothing pushed yet; "
            "run `speechpipe run`, or give --tracking-uri / --home)"
        )
    registry = Registry(tracking_uri)
    name, alias, version = match.group("name"), match.group("alias"), match.group("version")
    try:
        found = (
            registry.client.get_model_version_by_alias(name, alias)
            if alias
            else registry.client.get_model_version(name, version)
        )
    except MlflowException as error:
        raise ModelNotFound(f"model {reference!r}: {error.message if hasattr(error, 'message') else error}") from None
    version = str(found.version)
    target = os.path.join(cache_dir, name, version)
    if not os.path.isdir(target) or not os.listdir(target):
        _settle(registry.download(name, version, target + ".partial"), target)
    return ResolvedModel(saved_model_in(target), reference, name, version, dict(found.tags))


def _settle(downloaded: str, target: str) -> None:
    """Moves a finished download into place, so an interrupted one is never taken for a copy."""
    import shutil

    if os.path.isdir(target):
        shutil.rmtree(target)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(downloaded, target)
    partial = target + ".partial"
    if os.path.isdir(partial):
        shutil.rmtree(partial)


def default_cache(home: str) -> str:
    return os.path.join(os.path.abspath(home), "models")


def model_settings(saved_model_dir: str) -> Dict[str, object]:
    """What an export records of itself: its feature config (so audio is resampled to the rate its
    in-graph features expect) and, for an embedder, its embedder config and clustering threshold."""
    import json

    for name in (os.path.join("assets.extra", "embedder_config.json"), "training_result.json"):
        path = os.path.join(saved_model_dir, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return json.load(f)
    return {}


def model_sample_rate(saved_model_dir: str) -> int:
    return int((model_settings(saved_model_dir).get("features") or {}).get("sample_rate", 16000))
