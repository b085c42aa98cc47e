"""The typed configuration of one `speechpipe run`, with its defaults, and its validation.

Everything the TFX pipeline needs is here, explicitly: the home folder (pipeline root, ML
Metadata, the embedded MLflow registry, reports), the spans of audio to train on, the feature
configuration, the trainers' configurations, the blessing thresholds and the registry's tracking URI.
This module imports neither TensorFlow nor TFX, so the CLI can validate a run before paying for
either. Why one module of this size: a field, the data key it feeds and its check change
together; apart, a new setting would be added in three places.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from dataclasses import asdict, dataclass, field, replace
from typing import Dict, List, Optional, Tuple

from speechpipe.config import (
    CTC_MODEL_NAME,
    EMBEDDER_MODEL_NAME,
    MAX_EER,
    MAX_PER,
    SPLIT_FRACTIONS,
    FeatureConfig,
)
from speechpipe.io.storage import is_uri, walk_order
from speechpipe.phones.ctc_config import CTCTrainConfig
from speechpipe.phones.inventory import DEFAULT_INVENTORY
from speechpipe.results.tracking import tracking_uri_for
from speechpipe.speakers.embedder.config import EmbedderTrainConfig
from speechpipe.validation import ConfigError, validate_feature_config

PIPELINE_NAME = "speechpipe"
# The pipeline's two branches: the CTC phone recogniser and the speaker embedder. Each trains,
# is evaluated, gated and pushed on its own spans.
CTC, SPEAKER = "ctc", "speaker"
BRANCHES: Tuple[str, ...] = (CTC, SPEAKER)


# Where a branch's champion comes from: ML Metadata through a resolver node, or the MLflow
# registry's `champion` alias through a container step (open-source KFP runs no resolvers).
CHAMPION_SOURCES: Tuple[str, ...] = ("resolver", "registry")

# The demo run's budgets: 25 minutes in all on 2 cores, both branches. The trainers' own defaults
# are the measured recipes (docs/ctc.md, docs/embedder.md); a run shortens only their budgets:
# 8 minutes for the CTC recogniser (checked after every batch, speechpipe.components.
# trainer_contract; bench/ proves learning on 20), 4 for the embedder, validated twice as often.
DEMO_CTC = replace(CTCTrainConfig(), max_minutes=8.0)
DEMO_EMBEDDER = replace(EmbedderTrainConfig(), max_seconds=240.0, eval_every_steps=100)


@dataclass(frozen=True)
class RunConfig:
    """One run of the TFX pipeline. A span is a manifest.jsonl, a VoxCeleb-layout folder or a Kaldi
    data folder. `spans` feed both branches; `ctc_spans` and `speaker_spans` feed one branch only
    (a transcribed corpus for the phone recogniser, VoxCeleb for the embedder). A branch's spans
    are `spans` then its own, oldest first (`branch_spans`); its fixed test split is the test
    split of its span number `test_span`."""

    home: str = "speechpipe_home"
    spans: Tuple[str, ...] = ()
    ctc_spans: Tuple[str, ...] = ()
    speaker_spans: Tuple[str, ...] = ()
    # Which branches run; a branch that is off has no node in the pipeline.
    branches: Tuple[str, ...] = BRANCHES
    pipeline_name: str = PIPELINE_NAME
    features: FeatureConfig = field(default_factory=FeatureConfig)
    # The speaker embedder's features: the same analysis, normalised globally (docs/embedder.md:
    # per-utterance cmvn, best for the CTC model, removes most of what tells speakers apart).
    speaker_features: FeatureConfig = field(default_factory=lambda: FeatureConfig(normalization="global"))
    # Augmented copies of the speaker branch's training utterances (speechpipe.audio.augment's
    # AugmentConfig json: noise, reverberation, speed); None = clean training audio only.
    speaker_augment: Optional[Dict[str, object]] = None
    # The trainers' configurations, whole: the pipeline hands each to its Trainer as custom_config
    # json. The CTC inventory is not set here: it follows `language` (pipeline_arguments).
    ctc: CTCTrainConfig = field(default_factory=lambda: DEMO_CTC)
    embedder: EmbedderTrainConfig = field(default_factory=lambda: DEMO_EMBEDDER)
    # An official VoxCeleb trial list (veri_test2.txt, ...) as the speaker branch's test protocol, in
    # place of the trial list built from the test span's test split; "" = built.
    trials_file: str = ""
    # The corpus language, for transcripts given as ordinary text: espeak-ng phonemises them and
    # the language's inventory tokenises the result ("" = transcripts must be IPA).
    language: str = ""
    warm_start: bool = True  # start the CTC trainer from the champion's weights when shapes agree
    test_span: int = 0
    # Validation gate: anomalies from ExampleValidator always stop the run; so do these.
    max_dead_letter_fraction: float = 0.2
    min_train_examples: int = 1
    # Blessing: absolute thresholds, and the margin by which a candidate must beat the champion.
    max_per: float = MAX_PER
    max_eer: float = MAX_EER
    min_per_improvement: float = 0.0
    min_eer_improvement: float = 0.0
    # The speaker model's shipped decision threshold: the one with this false-accept rate on its
    # validation speakers (`speechpipe verify` decides with it).
    target_far: float = 0.01
    # Registry: None = $MLFLOW_TRACKING_URI when set, else SQLite under the home folder.
    tracking_uri: Optional[str] = None
    ctc_model_name: str = CTC_MODEL_NAME
    embedder_model_name: str = EMBEDDER_MODEL_NAME
    # Beam options for the Beam-based components; () = DirectRunner multi_processing, one per core.
    beam_args: Tuple[str, ...] = ()
    enable_cache: bool = True
    # Where each branch's champion comes from: "resolver" (ML Metadata, ChampionStrategy; LocalDagRunner,
    # Vertex AI) or "registry" (the MLflow registry's `champion` alias, read by a container step:
    # open-source KFP runs no resolver tasks; `speechpipe compile --champion-from registry`).
    champion_from: str = "resolver"  # one of CHAMPION_SOURCES
    split_fractions: Tuple[float, float, float] = SPLIT_FRACTIONS  # for inputs without splits
    # The folder (or URI prefix) that audio paths of the manifest and Kaldi spans are read from
    # and confined to, for inputs naming absolute paths; "" = each span's own folder. A
    # VoxCeleb-layout folder is always its own root (pipeline/preflight.py, span_data_root).
    data_root: str = ""

    # ---------------------------------------------------------------- spans per branch
    @property
    def include_speaker(self) -> bool:
        """The speaker branch (pair builder + siamese embedder + EER blessing + push). It needs 2 or
        more validation and test speakers and `embedder.speakers_per_batch` training speakers."""
        return SPEAKER in self.branches

    @property
    def include_ctc(self) -> bool:
        return CTC in self.branches

    def branch_spans(self, branch: str) -> Tuple[str, ...]:
        """The spans one branch trains on, oldest first: the shared ones, then its own."""
        own = {CTC: self.ctc_spans, SPEAKER: self.speaker_spans}[branch]
        return tuple(self.spans) + tuple(own) if branch in self.branches else ()

    @property
    def all_spans(self) -> Tuple[str, ...]:
        """Every span of the run once, numbered by position: the shared ones, then the CTC
        branch's own, then the speaker branch's own (each has one FeatureGen per feature set)."""
        out: List[str] = []
        for span in self.branch_spans(CTC) + self.branch_spans(SPEAKER):
            if span not in out:
                out.append(span)
        return tuple(out)

    def span_numbers(self, branch: str) -> Tuple[int, ...]:
        """A branch's spans as numbers into `all_spans`."""
        everything = self.all_spans
        return tuple(everything.index(s) for s in self.branch_spans(branch))

    # ---------------------------------------------------------------- derived paths
    # A home on object storage (gs://, s3://: any URI with a scheme) is kept as given, not made
    # absolute against the working folder: it is where a cluster deployment (`speechpipe compile`)
    # puts the pipeline root.
    @property
    def home_abs(self) -> str:
        return self.home.rstrip("/") if is_uri(self.home) else os.path.abspath(self.home)

    @property
    def pipeline_root(self) -> str:
        return join_path(self.home_abs, "pipeline_root", self.pipeline_name)

    @property
    def metadata_path(self) -> str:
        if is_uri(self.home):
            # SQLite cannot live on object storage; a cluster run records into the orchestrator's
            # own metadata store instead, and never asks for this path.
            raise ConfigError(
                f"home={self.home!r}: ML Metadata is a local SQLite file, so `speechpipe run` needs a "
                "local home (or a mounted volume); a home on object storage is for `speechpipe "
                "compile`, whose runs use the cluster's metadata store"
            )
        return os.path.join(self.home_abs, "metadata", f"{self.pipeline_name}.sqlite")

    @property
    def reports_dir(self) -> str:
        return join_path(self.home_abs, "reports")

    @property
    def registry_uri(self) -> str:
        """The MLflow tracking (and registry) URI this run uses."""
        return tracking_uri_for(self.tracking_uri, self.home_abs)

    @property
    def effective_beam_args(self) -> List[str]:
        from speechpipe.jobs.beam_options import direct_runner_defaults, with_quiet_workers

        return with_quiet_workers(list(self.beam_args) if self.beam_args else direct_runner_defaults([]))

    def to_json(self) -> Dict[str, object]:
        return asdict(self)


def join_path(base: str, *parts: str) -> str:
    """os.path.join for local paths; '/'-joined for URIs, whatever the local separator."""
    return posixpath.join(base, *parts) if is_uri(base) else os.path.join(base, *parts)


def _manifest_audio(content: bytes) -> List[str]:
    """The `audio` paths a manifest's lines name (lines that are not JSON objects are the
    feature job's to dead-letter, not the fingerprint's)."""
    paths = []
    for line in content.decode("utf-8", errors="replace").splitlines():
        try:
            audio = json.loads(line).get("audio")
        except (ValueError, AttributeError):
            continue
        if isinstance(audio, str):
            paths.append(audio)
    return paths


def span_fingerprint(path: str) -> str:
    """Names the content of a span's input cheaply: every file's relative path, size and mtime
    (the manifest's own bytes too). New or changed audio changes it, so the span's feature
    generation runs again; an unchanged span is served from the ML Metadata cache. A span on
    object storage gets the same fingerprint from one listing of its prefix
    (`_remote_span_fingerprint`)."""
    if is_uri(path):
        return _remote_span_fingerprint(path)
    path = os.path.abspath(path)
    digest = hashlib.sha256()

    def add(full: str, root: str) -> None:
        try:
            stat = os.stat(full)
            digest.update(f"{os.path.relpath(full, root)}\0{stat.st_size}\0{int(stat.st_mtime)}\n".encode())
        except OSError:
            digest.update(f"{full}\0missing\n".encode())

    if os.path.isfile(path):
        # A manifest: its bytes, and the audio files its lines name (not the whole folder).
        root = os.path.dirname(path)
        with open(path, "rb") as f:
            content = f.read()
        digest.update(content)
        for audio in _manifest_audio(content):
            add(audio if os.path.isabs(audio) else os.path.join(root, audio), root)
    else:
        for folder, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                add(os.path.join(folder, name), path)
    return digest.hexdigest()[:16]


def _remote_span_fingerprint(uri: str) -> str:
    """span_fingerprint for a span on object storage. Object listings carry each object's size
    and update time, so one listing of the span's prefix replaces a stat per file: a
    million-utterance span costs about a thousand list calls instead of a million requests."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    from speechpipe.pipeline.spans import list_objects

    uri = uri.rstrip("/")
    digest = hashlib.sha256()

    def add(full: str, root: str, objects: Dict[str, Tuple[int, float]]) -> None:
        if full in objects:
            size, updated = objects[full]
            digest.update(f"{posixpath.relpath(full, root)}\0{size}\0{int(updated)}\n".encode())
        else:
            digest.update(f"{full}\0missing\n".encode())

    if FileSystems.exists(uri):
        # A manifest: its bytes, and the audio files its lines name, looked up in one listing of
        # the manifest's folder (the data root its relative paths start from).
        root = posixpath.dirname(uri)
        with FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            content = f.read()
        digest.update(content)
        objects = list_objects(root)
        for audio in _manifest_audio(content):
            add(audio if is_uri(audio) else posixpath.join(root, audio), root, objects)
    else:
        # A folder is a prefix: every object under it, in the order os.walk visits a local folder
        # (a folder's files, then its subfolders, each sorted), so that the same files give the
        # same fingerprint wherever they are.
        objects = list_objects(uri)
        for full in sorted(objects, key=lambda p: walk_order(p[len(uri) + 1 :])):
            add(full, uri, objects)
    return digest.hexdigest()[:16]


def data_key(config: RunConfig, fingerprints: List[str], branch: str = CTC) -> str:
    """Names one branch's training data: its spans' fingerprints and its feature config
    (`fingerprints` are those of `config.all_spans`). The champion resolver skips models blessed on
    this same key, so a re-run with nothing new resolves the same champion as the run before it,
    and every node is a cache hit; a new span of the other branch changes nothing here."""
    mine = [fingerprints[i] for i in config.span_numbers(branch)]
    features = config.features if branch == CTC else config.speaker_features
    data = {"branch": branch, "spans": mine, "features": features.to_json()}
    if branch == SPEAKER and config.speaker_augment:
        data["augment"] = config.speaker_augment  # other training data; absent, keys stay as they were
    payload = json.dumps(data, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def data_keys(config: RunConfig, fingerprints: List[str]) -> Dict[str, str]:
    """{branch: data key} for the branches that run."""
    return {branch: data_key(config, fingerprints, branch) for branch in config.branches}


def _span_exists(span: str) -> bool:
    """A local file or folder, or an object (a manifest) or prefix (a folder) on object storage."""
    if not is_uri(span):
        return os.path.exists(span)
    from apache_beam.io.filesystems import FileSystems

    from speechpipe.pipeline.spans import list_objects

    return FileSystems.exists(span) or bool(list_objects(span))


def validate_run_config(config: RunConfig) -> RunConfig:
    """Returns the config when it is valid; raises ConfigError naming the first bad value."""
    unknown = [b for b in config.branches if b not in BRANCHES]
    if not config.branches or unknown or len(set(config.branches)) != len(config.branches):
        raise ConfigError(f"branches={list(config.branches)}: one or both of {', '.join(BRANCHES)}, each once")
    for branch, own in ((CTC, config.ctc_spans), (SPEAKER, config.speaker_spans)):
        if own and branch not in config.branches:
            raise ConfigError(
                f"{branch}_spans: given, but the {branch} branch is off (branches={list(config.branches)})"
            )
    if not config.all_spans:
        raise ConfigError("spans: need at least one input (a manifest.jsonl or an audio folder)")
    for branch in config.branches:
        spans = config.branch_spans(branch)
        if not spans:
            raise ConfigError(f"spans: the {branch} branch has no span (give --span or --{branch}-span)")
        normal = [s if is_uri(s) else os.path.abspath(s) for s in spans]
        if len(set(normal)) != len(normal):
            raise ConfigError(f"spans: the same input is listed twice for the {branch} branch: {list(spans)}")
        if not 0 <= config.test_span < len(spans):
            raise ConfigError(f"test_span={config.test_span}: need 0..{len(spans) - 1} (the {branch} branch's spans)")
    for i, span in enumerate(config.all_spans):
        if not _span_exists(span):
            raise ConfigError(f"spans[{i}]={span!r}: no such file or folder")
    if config.language:
        from speechpipe.phones.inventory import inventory_for

        try:
            inventory_for(config.language)
        except ValueError as error:
            raise ConfigError(str(error)) from None
    if config.trials_file:
        if not config.include_speaker:
            raise ConfigError("trials_file: an official trial list is the speaker branch's; that branch is off")
        if not (is_uri(config.trials_file) or os.path.isfile(config.trials_file)):
            raise ConfigError(f"trials_file={config.trials_file!r}: no such file")
    if not config.pipeline_name.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"pipeline_name={config.pipeline_name!r}: letters, digits, '-' and '_' only")
    validate_feature_config(config.features)
    validate_feature_config(config.speaker_features)
    if config.speaker_augment is not None:
        from speechpipe.audio.augment import AugmentConfig

        if not config.include_speaker:
            raise ConfigError("speaker_augment: augments the speaker branch's training audio; that branch is off")
        if not AugmentConfig.from_json(config.speaker_augment).validate().enabled:
            raise ConfigError("speaker_augment: no copies asked for (copies 0); leave it out for clean audio only")
    for section, trainer in (("ctc", config.ctc), ("embedder", config.embedder)):
        try:
            trainer.validate()
        except ConfigError as error:
            raise ConfigError(f"{section}: {error}") from None
    if config.ctc.inventory != DEFAULT_INVENTORY:
        raise ConfigError(
            f"ctc.inventory={config.ctc.inventory!r}: the CTC branch's phone set follows `language` "
            "(the one the feature job tokenises the transcripts with); set language instead"
        )
    if not config.max_per > 0:
        raise ConfigError(f"max_per={config.max_per}: must be positive (PER can exceed 1 with insertions)")
    if not 0.0 < config.target_far < 1.0:
        raise ConfigError(f"target_far={config.target_far}: need a false-accept rate in (0, 1)")
    for name in ("max_dead_letter_fraction", "max_eer"):
        value = getattr(config, name)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{name}={value}: need a fraction in [0, 1]")
    for name in ("min_per_improvement", "min_eer_improvement"):
        if not 0.0 <= getattr(config, name) < 1.0:
            raise ConfigError(f"{name}={getattr(config, name)}: need a fraction in [0, 1)")
    if config.min_train_examples < 0:
        raise ConfigError(f"min_train_examples={config.min_train_examples}: must be >= 0")
    if (
        len(config.split_fractions) != 3
        or abs(sum(config.split_fractions) - 1.0) > 1e-6
        or min(config.split_fractions) < 0
    ):
        raise ConfigError(f"split_fractions={config.split_fractions}: three non-negative fractions summing to 1")
    if config.data_root and not is_uri(config.data_root) and not os.path.isdir(config.data_root):
        raise ConfigError(f"data_root={config.data_root!r}: no such folder")
    if config.champion_from not in CHAMPION_SOURCES:
        raise ConfigError(f"champion_from={config.champion_from!r}: one of {', '.join(CHAMPION_SOURCES)}")
    if not config.ctc_model_name or not config.embedder_model_name:
        raise ConfigError("ctc_model_name, embedder_model_name: registry model names must not be empty")
    if len(config.branches) == 2 and config.ctc_model_name == config.embedder_model_name:
        raise ConfigError("ctc_model_name and embedder_model_name must differ")
    return config
