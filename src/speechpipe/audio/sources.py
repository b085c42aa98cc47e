"""Inputs of the feature job: a VoxCeleb-layout root, a JSON Lines manifest, or a Kaldi data
directory, turned into `SourceRecord`s, or into `DeadLetter`s that say why not.

Audio paths are confined to the data root: `..`, absolute paths elsewhere and symlinks that
lead out are refused, and a Kaldi wav.scp command (`... |`) is never executed. The data root is
the input's folder unless the command is given another (`--data-root`): a wav.scp or manifest
that names absolute paths needs the folder that holds them, and is confined to it.

The input may be on object storage (gs://, s3://: any URI Beam's FileSystems reads). Its data
root is then a URI prefix, and the same confinement holds on URIs: `..` is normalised away, and
a path that leads to another bucket or scheme, or a local absolute path, is outside the root.
Object stores have no symlinks.

Why one module of this size: the three layouts share the rules that matter (path confinement,
split assignment, the dead-letter reasons and duplicate handling), and each layout's reader is a
few dozen lines; apart, the rules would be copied or imported in circles.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterator, List, Mapping, Optional, Tuple

from speechpipe.audio.decode import AUDIO_EXTENSIONS
from speechpipe.config import SPLIT_FRACTIONS, SPLITS
from speechpipe.io import storage

# Input-side dead-letter reasons (the audio-side ones are in speechpipe.audio.decode).
INVALID_UTF8 = "invalid_utf8"
INVALID_JSON = "invalid_json"
MISSING_FIELD = "missing_field"
OUTSIDE_ROOT = "outside_root"
COMMAND_NOT_SUPPORTED = "command_not_supported"
UNKNOWN_PHONE = "unknown_phone"
UNPHONEMISABLE = "unphonemisable"  # text that espeak-ng cannot turn into the inventory's phones
DUPLICATE_UTTERANCE = "duplicate_utterance"
BAD_LAYOUT = "bad_layout"
MISSING_SPEAKER = "missing_speaker"
INVALID_SPLIT = "invalid_split"

VOXCELEB, MANIFEST, KALDI = "voxceleb", "manifest", "kaldi"
MANIFEST_REQUIRED = ("utterance", "audio", "speaker")


# VoxCeleb's meta files, as the datasets ship them: one line per speaker with its id and its
# `Set` (dev or test). VoxCeleb1's is tab-separated, VoxCeleb2's comma-separated with padding.
VOXCELEB_META_FILES = ("vox1_meta.csv", "vox2_meta.csv")


@dataclass(frozen=True)
class InputSpec:
    """What one feature job reads; `data_root` confines every audio path. `speaker_sets`: each
    speaker's split (train, validation or test) from a VoxCeleb meta file (`meta_file`): its test
    speakers are the test split, and a fixed share of its dev speakers validates."""

    kind: str
    path: str
    data_root: str
    split_fractions: Tuple[float, float, float] = SPLIT_FRACTIONS
    split_seed: int = 0
    meta_file: str = ""
    speaker_sets: Optional[Mapping[str, str]] = field(default=None, compare=False, hash=False, repr=False)
    # {speaker: split} for the few speakers whose hash-drawn split the run's preflight moved, so
    # that each evaluation split gets two speakers with two utterances (speechpipe.jobs.
    # corpus_inventory.plan_split_overrides): listing the corpus is the preflight's, which has
    # to list it anyway; the job stays streaming. Utterances with a split of their own keep it.
    split_overrides: Optional[Mapping[str, str]] = field(default=None, compare=False, hash=False, repr=False)

    def split_rule(self) -> str:
        """How this input's utterances get their splits, for the job's summary."""
        moved = ""
        if self.split_overrides:
            moved = f"; {len(self.split_overrides)} speaker(s) moved by the run's preflight (split_overrides)"
        if self.speaker_sets is not None:
            sets = list(self.speaker_sets.values())
            dev = sets.count("train") + sets.count("validation")
            return (
                f"{os.path.basename(self.meta_file)}'s Set column: its {sets.count('test')} test speakers are "
                f"the test split; {sets.count('validation')} of its {dev} dev speakers (a share of "
                f"{validation_share(self.split_fractions):.4f}, those first in a hash of their ids with seed "
                f"{self.split_seed}) validate, the rest train"
            )
        return (
            f"by speaker id, fractions {list(self.split_fractions)} with seed {self.split_seed}, where an "
            f"input line names no split{moved}"
        )


def validation_share(fractions: Tuple[float, float, float]) -> float:
    """The share of a meta file's dev speakers that validate: the configured validation share of
    the speakers that are not test speakers."""
    return fractions[1] / (fractions[0] + fractions[1]) if fractions[0] + fractions[1] > 0 else 0.0


def read_voxceleb_meta(path: str) -> Dict[str, str]:
    """{speaker id: "dev" | "test"} from vox1_meta.csv or vox2_meta.csv (a local file or a URI).
    Raises InputError on a file without an id and a Set column, or with another Set value."""
    lines = [line.decode("utf-8") for line in _lines(path)]
    rows = [
        [cell.strip() for cell in (line.split("\t") if "\t" in line else line.split(","))]
        for line in lines
        if line.strip()
    ]
    if not rows:
        raise InputError(f"{path}: an empty VoxCeleb meta file")
    header = [h.lower() for h in rows[0]]
    try:
        id_column = next(i for i, h in enumerate(header) if h.startswith("voxceleb") and h.endswith("id"))
        set_column = header.index("set")
    except (StopIteration, ValueError):
        raise InputError(
            f"{path}: expected VoxCeleb's header with a 'VoxCeleb1 ID' (or 'VoxCeleb2 ID') and a "
            f"'Set' column, found {rows[0]}"
        ) from None
    sets: Dict[str, str] = {}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) <= max(id_column, set_column):
            raise InputError(f"{path}:{number}: {len(row)} columns, expected {len(header)}")
        speaker, which = row[id_column], row[set_column].lower()
        if which not in ("dev", "test"):
            raise InputError(f"{path}:{number}: Set {row[set_column]!r} for {speaker}, expected dev or test")
        sets[speaker] = which
    return sets


def _find_meta(root: str) -> str:
    """The VoxCeleb meta file in a VoxCeleb root, or ''."""
    for name in VOXCELEB_META_FILES:
        candidate = storage.join(root, name) if storage.is_uri(root) else os.path.join(root, name)
        if storage.beam_exists(candidate) if storage.is_uri(root) else os.path.isfile(candidate):
            return candidate
    return ""


@dataclass(frozen=True)
class RawInput:
    """One input item before parsing: a manifest line, a file, or a wav.scp entry."""

    order: int  # position in the input, for choosing among duplicates
    source: str  # where it came from, for the dead letter: "manifest.jsonl:12", a path
    payload: object


@dataclass(frozen=True)
class SourceRecord:
    utterance: str
    audio_path: str  # resolved, inside the data root
    source: str
    order: int
    speaker: str
    session: str
    split: str
    text: Optional[str] = None
    # IPA as given; after the feature job's parse step, the phones joined by single spaces.
    phones: Optional[str] = None


@dataclass(frozen=True)
class DeadLetter:
    source: str
    stage: str
    reason: str
    detail: str
    utterance: Optional[str] = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def rejected_audio(cls, record: "SourceRecord", reason: str, detail: str) -> "DeadLetter":
        """A record whose audio the decoder refused (stage `audio`), as every job reports it."""
        return cls(source=record.source, stage="audio", reason=reason, detail=detail, utterance=record.utterance)


class InputError(ValueError):
    """The input as a whole is unusable (no such file, unknown kind): the job cannot start."""


def detect_kind(path: str) -> str:
    if storage.is_uri(path):
        # No folders on object storage: an object at the path is a manifest, a prefix a folder.
        if storage.beam_exists(path):
            return MANIFEST
        if storage.beam_exists(posixpath.join(path, "wav.scp")):
            return KALDI
        if storage.beam_has_objects(path):
            return VOXCELEB
        raise InputError(f"input {path!r} is neither a manifest object nor a prefix holding objects")
    if os.path.isfile(path):
        return MANIFEST
    if os.path.isdir(path):
        return KALDI if os.path.isfile(os.path.join(path, "wav.scp")) else VOXCELEB
    raise InputError(f"input {path!r} is neither a manifest file nor a folder")


def make_spec(path: str, kind: Optional[str] = None, data_root: Optional[str] = None, **split) -> InputSpec:
    if storage.is_uri(path):
        return _make_uri_spec(path, kind, data_root, **split)
    path = os.path.abspath(path)
    kind = kind or detect_kind(path)
    if kind not in (VOXCELEB, MANIFEST, KALDI):
        raise InputError(f"input kind {kind!r}: expected {VOXCELEB}, {MANIFEST} or {KALDI}")
    root = data_root or (os.path.dirname(path) if kind == MANIFEST else path)
    if not os.path.isdir(root):
        raise InputError(f"data root {root!r} is not a folder")
    return _with_meta(InputSpec(kind=kind, path=path, data_root=os.path.abspath(root), **split))


def _with_meta(spec: InputSpec) -> InputSpec:
    """A VoxCeleb root with its meta file: the meta file decides the test split."""
    if spec.kind != VOXCELEB:
        return spec
    meta = _find_meta(spec.path)
    if not meta:
        return spec
    from dataclasses import replace

    return replace(spec, meta_file=meta, speaker_sets=voxceleb_splits(read_voxceleb_meta(meta), spec))


def voxceleb_splits(sets: Mapping[str, str], spec: InputSpec) -> Dict[str, str]:
    """{speaker: split} for a meta file's speakers: test speakers test; of the dev speakers, the
    round(share x count) first by a seeded hash of their ids validate (an exact, recorded number
    that does not depend on the order of the file), the others train."""
    dev = sorted(
        (s for s, which in sets.items() if which == "dev"),
        key=lambda s: hashlib.sha256(f"{spec.split_seed}:{s}".encode("utf-8")).digest(),
    )
    validating = set(dev[: round(validation_share(spec.split_fractions) * len(dev))])
    return {
        s: ("test" if which == "test" else "validation" if s in validating else "train") for s, which in sets.items()
    }


def _make_uri_spec(path: str, kind: Optional[str], data_root: Optional[str], **split) -> InputSpec:
    """make_spec for an input on object storage: paths stay URIs, normalised, without a trailing '/'."""
    path = normalise_uri(path)
    kind = kind or detect_kind(path)
    if kind not in (VOXCELEB, MANIFEST, KALDI):
        raise InputError(f"input kind {kind!r}: expected {VOXCELEB}, {MANIFEST} or {KALDI}")
    root = data_root or (posixpath.dirname(path) if kind == MANIFEST else path)
    if storage.is_uri(root):
        root = normalise_uri(root)
        # The URI form of "is a folder": a prefix with objects under it (one short listing).
        if not storage.beam_has_objects(root):
            raise InputError(f"data root {root!r} holds no objects")
    else:
        if not os.path.isdir(root):
            raise InputError(f"data root {root!r} is not a folder")
        root = os.path.abspath(root)
    return _with_meta(InputSpec(kind=kind, path=path, data_root=root, **split))


def normalise_uri(uri: str) -> str:
    """`scheme://bucket/key` with '.', '..' and repeated '/' resolved as in a POSIX path, the
    scheme in lower case and no trailing '/'. The bucket is the first path component, so a '..'
    that climbs above it names another bucket (never the same one)."""
    scheme, _, rest = uri.partition("://")
    normal = posixpath.normpath("/" + rest).lstrip("/")
    return f"{scheme.lower()}://{'' if normal == '.' else normal}"


def resolve_inside(root: str, path: str) -> Tuple[Optional[str], str]:
    """(resolved path, '') when `path` stays inside `root` after resolving symlinks and '..';
    (None, why) when it escapes."""
    if storage.is_uri(root):
        return _resolve_inside_uri(root, path)
    candidate = path if os.path.isabs(path) else os.path.join(root, path)
    real, real_root = os.path.realpath(candidate), os.path.realpath(root)
    if real == real_root or real.startswith(real_root + os.sep):
        return real, ""
    # If normalising the text of the path gives another place than resolving it, a symlink did.
    how = "a symlink leads" if os.path.normpath(os.path.abspath(candidate)) != real else "the path leads"
    return None, f"{path!r}: {how} outside the data root {root!r} (to {real!r})"


def _resolve_inside_uri(root: str, path: str) -> Tuple[Optional[str], str]:
    """resolve_inside for a data root on object storage. A relative path is joined to the root,
    a URI is taken as it is, and both are normalised ('..' resolved); the result is inside when it
    has the root's scheme and bucket and lies under the root's prefix. A local absolute path is
    elsewhere by definition. There are no symlinks to resolve on object storage."""
    if os.path.isabs(path) and not storage.is_uri(path):
        return None, f"{path!r}: a local path is outside the data root {root!r} on object storage"
    normal_root = normalise_uri(root)
    resolved = normalise_uri(path if storage.is_uri(path) else f"{normal_root}/{path}")
    if resolved == normal_root or resolved.startswith(normal_root + "/"):
        return resolved, ""
    return None, f"{path!r}: the path leads outside the data root {root!r} (to {resolved!r})"


def split_draw(speaker: str, seed: int) -> float:
    """The speaker's seeded draw in [0, 1) that `assign_split` compares with the fractions."""
    digest = hashlib.sha256(f"{seed}:{speaker}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(speaker: str, fractions: Tuple[float, float, float], seed: int) -> str:
    """A split drawn from the speaker id alone, so every utterance of a speaker lands together
    and a speaker keeps its split when more data arrives."""
    u = split_draw(speaker, seed)
    if u < fractions[0]:
        return "train"
    return "validation" if u < fractions[0] + fractions[1] else "test"


# ---------------------------------------------------------------- listing (one worker, cheap)


def expand_input(spec: InputSpec) -> Iterator[RawInput]:
    """Every input item, in a stable order. Lines and file names only: no audio is read here."""
    if spec.kind == MANIFEST:
        for number, line in enumerate(_lines(spec.path), start=1):
            if line.strip():
                yield RawInput(number, f"{spec.path}:{number}", line.rstrip(b"\r\n"))
    elif spec.kind == VOXCELEB and storage.is_uri(spec.path):
        # One listing of the prefix, in the order os.walk gives a local folder, so that the same
        # files are the same inputs (orders, sources) wherever they are.
        prefix = spec.path.rstrip("/") + "/"
        relative = [uri[len(prefix) :] for uri in storage.beam_list(spec.path)]
        order = 0
        for name in sorted(relative, key=storage.walk_order):
            if name.lower().endswith(AUDIO_EXTENSIONS):
                yield RawInput(order, prefix + name, name)
                order += 1
    elif spec.kind == VOXCELEB:
        order = 0
        for folder, dirs, files in os.walk(spec.path, followlinks=False):
            dirs.sort()
            for name in sorted(files):
                if name.lower().endswith(AUDIO_EXTENSIONS):
                    full = os.path.join(folder, name)
                    yield RawInput(order, full, os.path.relpath(full, spec.path))
                    order += 1
    else:
        yield from _expand_kaldi(spec)


def _lines(path: str) -> Iterator[bytes]:
    """A file's lines as bytes, line ends kept: a local file, or an object through Beam's FileSystems."""
    if storage.is_uri(path):
        yield from storage.beam_lines(path)
        return
    with open(path, "rb") as f:
        yield from f


def count_ignored_files(spec: InputSpec) -> int:
    """Files in a VoxCeleb root that are not audio by name; reported, not processed."""
    if spec.kind != VOXCELEB:
        return 0
    if storage.is_uri(spec.path):
        # A name ending in '/' is a console-made "folder" placeholder, not a file.
        return sum(
            1
            for uri in storage.beam_list(spec.path)
            if not uri.endswith("/") and not uri.lower().endswith(AUDIO_EXTENSIONS)
        )
    return sum(1 for _, _, files in os.walk(spec.path) for n in files if not n.lower().endswith(AUDIO_EXTENSIONS))


def _read_kaldi_table(path: str) -> Dict[str, str]:
    table: Dict[str, str] = {}
    if storage.is_uri(path):
        if not storage.beam_exists(path):
            return table
        stream = storage.beam_text(path)
    elif os.path.isfile(path):
        stream = open(path, encoding="utf-8")
    else:
        return table
    with stream as f:
        for line in f:
            key, _, value = line.strip().partition(" ")
            if key:
                table[key] = value.strip()
    return table


def _expand_kaldi(spec: InputSpec) -> Iterator[RawInput]:
    join = storage.join
    utt2spk = _read_kaldi_table(join(spec.path, "utt2spk"))
    text = _read_kaldi_table(join(spec.path, "text"))
    phones = _read_kaldi_table(join(spec.path, "phones"))  # ours: IPA per utterance
    scp = join(spec.path, "wav.scp")
    for number, line in enumerate(_lines(scp), start=1):
        if line.strip():
            utt = line.split(None, 1)[0].decode("utf-8", "replace")
            extra = {"speaker": utt2spk.get(utt), "text": text.get(utt), "phones": phones.get(utt)}
            yield RawInput(number, f"{scp}:{number}", (line.rstrip(b"\r\n"), extra))


# ---------------------------------------------------------------- parsing (parallel)


def parse_input(item: RawInput, spec: InputSpec):
    """A `SourceRecord`, or a `DeadLetter` saying why the item cannot be one."""
    if spec.kind == MANIFEST:
        return _parse_manifest_line(item, spec)
    if spec.kind == VOXCELEB:
        return _parse_voxceleb(item, spec)
    return _parse_kaldi(item, spec)


def _dead(item: RawInput, reason: str, detail: str, utterance: Optional[str] = None) -> DeadLetter:
    return DeadLetter(source=item.source, stage="input", reason=reason, detail=detail, utterance=utterance)


def _record(
    item: RawInput,
    spec: InputSpec,
    utterance: str,
    audio: str,
    speaker: str,
    session: str,
    split: Optional[str],
    text: Optional[str],
    phones: Optional[str],
):
    resolved, why = resolve_inside(spec.data_root, audio)
    if resolved is None:
        return _dead(
            item, OUTSIDE_ROOT, f"{why}; to read audio there, give --data-root a folder that holds it", utterance
        )
    if split is None:
        moved = spec.split_overrides.get(speaker) if spec.split_overrides else None
        split = moved or assign_split(speaker, spec.split_fractions, spec.split_seed)
    elif split not in SPLITS:
        return _dead(item, INVALID_SPLIT, f"split {split!r} is not one of {SPLITS}", utterance)
    return SourceRecord(
        utterance=utterance,
        audio_path=resolved,
        source=item.source,
        order=item.order,
        speaker=speaker,
        session=session,
        split=split,
        text=text,
        phones=phones,
    )


def _parse_manifest_line(item: RawInput, spec: InputSpec):
    try:
        line = item.payload.decode("utf-8")
    except UnicodeDecodeError as error:
        return _dead(item, INVALID_UTF8, f"byte {error.start}: {error.reason}")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as error:
        return _dead(item, INVALID_JSON, f"{error.msg} at column {error.colno}")
    if not isinstance(obj, dict):
        return _dead(item, INVALID_JSON, f"a JSON {type(obj).__name__}, not an object")
    missing = [k for k in MANIFEST_REQUIRED if not isinstance(obj.get(k), str) or not obj.get(k)]
    if missing:
        return _dead(item, MISSING_FIELD, f"missing or empty: {', '.join(missing)}", obj.get("utterance"))
    session = obj.get("session") or session_of_id(obj["utterance"], obj["speaker"])
    return _record(
        item,
        spec,
        obj["utterance"],
        obj["audio"],
        obj["speaker"],
        str(session),
        obj.get("split"),
        obj.get("text"),
        obj.get("phones"),
    )


def session_from_name(stem: str) -> str:
    """The session a file name gives in a layout without session folders: CN-Celeb's
    `<genre>-<nn>-<nnn>` (`singing-01-001`) is utterance 001 of session `singing-01`, LibriSpeech's
    `<speaker>-<chapter>-<nnnn>` utterance nnnn of its chapter. A name without '-' gives ''."""
    head, sep, _ = stem.rpartition("-")
    return head if sep and head else ""


def session_of_id(utterance: str, speaker: str) -> str:
    """The session of an utterance whose input names none (a Kaldi dir, a manifest line without
    `session`): the middle of a `<speaker>/<session>/<name>` id; else what the id's last part
    says (`1089-134686-0000` is utterance 0000 of chapter `1089-134686`, as in LibriSpeech's
    Kaldi recipes); else the speaker, one session. Never the utterance itself: that would make
    every pair of a speaker's utterances a cross-session pair and flatter the EER unreported."""
    parts = utterance.split("/")
    if len(parts) == 3:
        return parts[1]
    return session_from_name(parts[-1]) or speaker


def _parse_voxceleb(item: RawInput, spec: InputSpec):
    """A VoxCeleb file: <speaker>/<session>/<utterance>.<ext>, directly under the root, or, in a
    root with a meta file (the datasets as they ship), under their audio folder: VoxCeleb1's
    wav/, VoxCeleb2's dev/aac/ and test/aac/. The utterance id is what the official trial lists
    name: `id10270/x6uYqmx31kE/00001`. LibriSpeech's <speaker>/<chapter>/<file> is the same shape
    (the chapter is the session).

    Corpora without session folders, <speaker>/<utterance>.<ext> (CN-Celeb's
    `id00800/singing-01-001.flac`, a LibriSpeech subset flattened to `<speaker>/<file>`), are
    read too: the utterance id is `<speaker>/<name>`, the session the name up to its last '-'
    (`singing-01`, `<speaker>-<chapter>`), or, for a name without one, the speaker (one session)."""
    parts = item.payload.split("/" if storage.is_uri(spec.path) else os.sep)
    nested = spec.speaker_sets is not None and len(parts) > 3
    if len(parts) == 2:
        speaker, name = parts
        stem = os.path.splitext(name)[0]
        session = session_from_name(stem) or speaker
        utterance = f"{speaker}/{stem}"
    elif len(parts) != 3 and not nested:
        return _dead(
            item,
            BAD_LAYOUT,
            f"{item.payload!r} is not <speaker>/<session>/<utterance>.<ext> (or <speaker>/<utterance>.<ext>)",
        )
    else:
        speaker, session, name = parts[-3:]
        utterance = f"{speaker}/{session}/{os.path.splitext(name)[0]}"
    split = None
    if spec.speaker_sets is not None:
        split = spec.speaker_sets.get(speaker)
        if split is None:
            return _dead(item, MISSING_SPEAKER, f"speaker {speaker!r} is not in {spec.meta_file}", utterance)
    return _record(item, spec, utterance, item.payload, speaker, session, split, None, None)


def _parse_kaldi(item: RawInput, spec: InputSpec):
    raw, extra = item.payload
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        return _dead(item, INVALID_UTF8, f"byte {error.start}: {error.reason}")
    utterance, _, audio = line.strip().partition(" ")
    audio = audio.strip()
    if not audio:
        return _dead(item, MISSING_FIELD, "wav.scp line has no audio path", utterance)
    if audio.endswith("|") or audio.startswith("|"):
        return _dead(
            item,
            COMMAND_NOT_SUPPORTED,
            f"wav.scp command {audio!r} is never executed; convert the audio to files",
            utterance,
        )
    if not extra["speaker"]:
        return _dead(item, MISSING_SPEAKER, "utterance not in utt2spk", utterance)
    session = session_of_id(utterance, extra["speaker"])
    return _record(item, spec, utterance, audio, extra["speaker"], session, None, extra["text"], extra["phones"])


def keep_first(utterance: str, records: List[SourceRecord]) -> Tuple[SourceRecord, List[DeadLetter]]:
    """Among inputs that share an utterance id, the first in input order is kept; the others
    go to the dead letter naming the one that was kept."""
    ordered = sorted(records, key=lambda r: (r.order, r.source))
    kept = ordered[0]
    dead = [
        DeadLetter(
            source=r.source,
            stage="input",
            reason=DUPLICATE_UTTERANCE,
            detail=f"utterance {utterance!r} already given by {kept.source}",
            utterance=utterance,
        )
        for r in ordered[1:]
    ]
    return kept, dead
