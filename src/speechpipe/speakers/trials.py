"""VoxCeleb trial lists: strict reading and writing.

One trial a line, `<label> <path-a> <path-b>`, fields separated by one space, label `1` (same
speaker) or `0`, paths relative to the wav root: `id10270/x6uYqmx31kE/00001.wav`. This is the
format of all four official VoxCeleb1 lists:

    veri_test.txt         VoxCeleb1-O, the original list (37,720 trials)
    veri_test2.txt        VoxCeleb1-O, cleaned (37,611 trials)
    list_test_all2.txt    VoxCeleb1-E, cleaned (579,818 trials)
    list_test_hard2.txt   VoxCeleb1-H, cleaned (550,894 trials)

speechpipe's utterance ids are the paths without the extension (`id10270/x6uYqmx31kE/00001`):
`.wav` is appended on writing and removed on reading. Parsing is strict: anything but the
format above raises `TrialFormatError` naming the file and the line. A trailing `\\r` (files
copied through Windows) is the one liberty taken.

How strictly a path is checked depends on whose list it is. An official VoxCeleb list
(`voxceleb_ids=True`, the default) must name `idXXXXX/<11-char video>/<nnnnn>.wav`, so that a
list of another corpus or a damaged copy is caught. A list speechpipe wrote from a corpus
(`voxceleb_ids=False`) names that corpus's own utterance ids, whatever their form: LibriSpeech
chapters (`1089/c134686/1089-134686-0000`), CN-Celeb's `id00800/singing-01-001` without a
session folder, Kaldi ids. Any id without whitespace is written and read back unchanged; an id
with whitespace cannot be written (the fields are separated by spaces) and is refused, named.
"""

from __future__ import annotations

import io
import re
from dataclasses import asdict, dataclass
from typing import IO, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Union

from speechpipe.speakers.pairs import DIFFERENT, SAME, PairsInputError

OFFICIAL_LISTS: Dict[str, str] = {
    "veri_test.txt": "VoxCeleb1-O (original)",
    "veri_test2.txt": "VoxCeleb1-O (cleaned)",
    "list_test_all2.txt": "VoxCeleb1-E (cleaned)",
    "list_test_hard2.txt": "VoxCeleb1-H (cleaned)",
}
AUDIO_EXTENSION = ".wav"

# idXXXXX/<11-character YouTube id>/<5 digits>.wav, as in every official list.
VOXCELEB_PATH = re.compile(r"id\d{5}/[A-Za-z0-9_-]{11}/\d{5}\.wav")
# Any utterance id without whitespace, then .wav: what format_trial writes for any corpus.
ANY_PATH = re.compile(r"\S+\.wav")
_WHITESPACE = re.compile(r"\s")


class TrialFormatError(PairsInputError):
    """A trial list line is malformed; the message names the file and the line number."""


class Trial(NamedTuple):
    label: int  # SAME (1) or DIFFERENT (0)
    utterance_a: str  # utterance ids, without the .wav extension
    utterance_b: str


def utterance_to_path(utterance: str) -> str:
    """`id10270/x6uYqmx31kE/00001` -> `id10270/x6uYqmx31kE/00001.wav`."""
    return utterance + AUDIO_EXTENSION


def path_to_utterance(path: str) -> str:
    """`id10270/x6uYqmx31kE/00001.wav` -> `id10270/x6uYqmx31kE/00001`."""
    if not path.endswith(AUDIO_EXTENSION):
        raise ValueError(f"{path!r} does not end in {AUDIO_EXTENSION}")
    return path[: -len(AUDIO_EXTENSION)]


def check_writable(utterance: str) -> str:
    """The id, if a trial list can hold it and give it back unchanged; else TrialFormatError
    naming it. Fields are separated by spaces and lines by newlines, so an id must be non-empty
    and hold no whitespace."""
    if not isinstance(utterance, str):
        raise TrialFormatError(f"utterance id {utterance!r} cannot be written to a trial list: not a str")
    if not utterance:
        raise TrialFormatError(f"utterance id {utterance!r} cannot be written to a trial list: it is empty")
    found = _WHITESPACE.search(utterance)
    if found:
        raise TrialFormatError(
            f"utterance {utterance!r} cannot be written to a trial list: it holds whitespace ({found.group()!r} "
            f"at position {found.start()}), and the list's fields are separated by spaces"
        )
    return utterance


def format_trial(label: int, utterance_a: str, utterance_b: str) -> str:
    """One trial line, without the newline. An id that the line could not give back unchanged
    (empty, or holding whitespace) raises TrialFormatError naming it."""
    if label not in (SAME, DIFFERENT):
        raise ValueError(f"label {label!r}: need {SAME} or {DIFFERENT}")
    line = f"{label} {utterance_a}{AUDIO_EXTENSION} {utterance_b}{AUDIO_EXTENSION}"
    # A cheap test of the whole line first, as this runs for every trial written: every
    # whitespace character but the space is unprintable, so a printable line with its two
    # separators alone is well formed. Only a line failing it gets the exact check by id.
    if not (utterance_a and utterance_b and line.isprintable()) or line.count(" ") != 2:
        check_writable(utterance_a)
        check_writable(utterance_b)
    return line


def parse_trial_line(line: str, where: str, voxceleb_ids: bool = True) -> Trial:
    """Parses one line (its newline already removed); `where` ('file:line') prefixes errors.
    `voxceleb_ids`: paths must be VoxCeleb's (official lists); else any id without whitespace
    (lists speechpipe wrote, and --any_ids lists of other corpora)."""
    text = line[:-1] if line.endswith("\r") else line
    fields = text.split(" ")
    if len(fields) != 3:
        raise TrialFormatError(
            f"{where}: expected '<label> <path-a> <path-b>' separated by single spaces, got {text[:120]!r}"
        )
    label, a, b = fields
    if label not in ("0", "1"):
        raise TrialFormatError(f"{where}: label {label!r} is neither 1 nor 0")
    pattern = VOXCELEB_PATH if voxceleb_ids else ANY_PATH
    for path in (a, b):
        if not pattern.fullmatch(path):
            shape = "idXXXXX/<11-char video>/<nnnnn>.wav" if voxceleb_ids else "<utterance id>.wav without whitespace"
            raise TrialFormatError(f"{where}: path {path[:120]!r} is not {shape}")
    return Trial(int(label), path_to_utterance(a), path_to_utterance(b))


def iter_trials_from(stream: IO[str], name: str, voxceleb_ids: bool = True) -> Iterator[Trial]:
    """Trials of an open text stream; `name` is used in error messages."""
    for number, line in enumerate(stream, 1):
        if line.endswith("\n"):
            line = line[:-1]
        yield parse_trial_line(line, f"{name}:{number}", voxceleb_ids)


def iter_trials(path: str, voxceleb_ids: bool = True) -> Iterator[Trial]:
    """Trials of a file, streamed (the 580k-line lists are never held whole). Local paths and
    any filesystem Beam knows (gs://...) are accepted."""
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        raise FileNotFoundError(f"trial list {path} does not exist")
    with FileSystems.open(path) as raw:
        yield from iter_trials_from(io.TextIOWrapper(raw, encoding="utf-8", newline="\n"), path, voxceleb_ids)


def read_trials(path: str, voxceleb_ids: bool = True) -> List[Trial]:
    """Every trial of a file, in file order."""
    return list(iter_trials(path, voxceleb_ids))


def write_trials(target: Union[str, IO[str]], trials: Iterable[Trial]) -> int:
    """Writes trials (to a path or an open text stream) in the official format, '\\n' line ends.
    Returns the number of trials written."""
    if isinstance(target, str):
        with open(target, "w", encoding="utf-8", newline="\n") as f:
            return write_trials(f, trials)
    count = 0
    for trial in trials:
        target.write(format_trial(*trial) + "\n")
        count += 1
    return count


@dataclass(frozen=True)
class TrialStats:
    """What a trial list holds: used to report on official lists and to test our own."""

    trials: int
    same: int
    different: int
    self_trials: int  # an utterance against itself
    duplicates: int  # trials repeating an earlier one (either order)
    utterances: int  # distinct utterances
    speakers: int  # distinct speakers (`speaker_of`; by default the first path component)

    def to_json(self) -> Dict[str, int]:
        return asdict(self)


def _first_component(utterance: str) -> str:
    return utterance.split("/", 1)[0]


def trial_stats(trials: Iterable[Trial], speaker_of: Callable[[str], str] = _first_component) -> TrialStats:
    """`speaker_of`: an utterance's speaker. The default, its id's first path component, holds for
    VoxCeleb's ids only; a corpus whose ids do not name their speaker (Kaldi's `spk-utt`, a
    manifest's own ids) needs its index's speakers."""
    seen = set()
    utterances = set()
    same = different = self_trials = duplicates = 0
    for label, a, b in trials:
        same += label == SAME
        different += label == DIFFERENT
        self_trials += a == b
        key = (a, b) if a <= b else (b, a)
        duplicates += key in seen
        seen.add(key)
        utterances.update((a, b))
    speakers = {speaker_of(u) for u in utterances}
    return TrialStats(same + different, same, different, self_trials, duplicates, len(utterances), len(speakers))


def list_description(path: str) -> Optional[str]:
    """'VoxCeleb1-H (cleaned)' for list_test_hard2.txt, None for a file of another name."""
    return OFFICIAL_LISTS.get(path.replace("\\", "/").rsplit("/", 1)[-1])
