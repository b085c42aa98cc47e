"""IPA phone inventories (German, phones_de.json; English, phones_en.json) and the tokenizer from an
IPA string to phones.

Policy (also written in each inventory's `policy` block under schemas/):
- affricates (pf, ts, tʃ, dʒ), long vowels (with ː) and diphthongs are single phones;
- a length mark belongs to the vowel before it; a length mark that forms no phone is an error;
- stress marks (ˈ ˌ), syllable boundaries (.), linking (‿) and word spaces carry no phone and are
  removed; everything else must be in the inventory, or `UnknownPhoneError` names it.
The tokenizer matches greedily, longest phone first, so "pf" in "apfəl" is one affricate even
where espeak-ng itself segments p + f.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Dict, FrozenSet, List, Sequence, Tuple

DEFAULT_INVENTORY = "phones_de.json"
# The inventory of each corpus language speechpipe phonemises (espeak-ng's voice names).
LANGUAGE_INVENTORIES: Dict[str, str] = {"de": "phones_de.json", "en-us": "phones_en.json"}


def inventory_for(language: str = "") -> str:
    """The inventory file of a corpus language; German's when no language is given."""
    if not language:
        return DEFAULT_INVENTORY
    if language not in LANGUAGE_INVENTORIES:
        raise ValueError(
            f"language {language!r}: speechpipe has phone inventories for {', '.join(sorted(LANGUAGE_INVENTORIES))}"
        )
    return LANGUAGE_INVENTORIES[language]


class UnknownPhoneError(ValueError):
    """An IPA string holds a symbol that is neither a phone nor an ignored mark."""

    def __init__(self, symbol: str, position: int, ipa: str) -> None:
        self.symbol = symbol
        self.position = position
        self.ipa = ipa
        code = " ".join(f"U+{ord(c):04X}" for c in symbol)
        super().__init__(f"unknown phone symbol {symbol!r} ({code}) at position {position} of {ipa!r}")


@dataclass(frozen=True)
class PhoneInventory:
    """An ordered phone set; ids are positions, and the CTC blank takes the id after the last."""

    name: str
    phones: Tuple[str, ...]
    ignored: FrozenSet[str] = frozenset()  # marks that carry no phone (stress, boundaries)

    def __post_init__(self) -> None:
        if len(set(self.phones)) != len(self.phones):
            raise ValueError(f"inventory {self.name} lists a phone twice")
        overlap = set(self.phones) & set(self.ignored)
        if overlap:
            raise ValueError(f"inventory {self.name}: {sorted(overlap)} both phones and ignored")

    @property
    def size(self) -> int:
        return len(self.phones)

    @property
    def blank_id(self) -> int:
        """The CTC blank: one past the last phone, shared by the loss and every decoder."""
        return len(self.phones)

    @property
    def num_classes(self) -> int:
        return len(self.phones) + 1

    def phone_to_id(self) -> Dict[str, int]:
        return _phone_ids(self)

    def tokenize(self, ipa: str) -> List[str]:
        """Splits an IPA string into phones; raises `UnknownPhoneError` on any other symbol."""
        text = unicodedata.normalize("NFC", ipa)
        by_first = _phones_by_first_char(self)
        phones: List[str] = []
        i = 0
        while i < len(text):
            if text[i] in self.ignored or text[i].isspace():
                i += 1
                continue
            for phone in by_first.get(text[i], ()):
                if text.startswith(phone, i):
                    phones.append(phone)
                    i += len(phone)
                    break
            else:
                raise UnknownPhoneError(text[i], i, ipa)
        return phones

    def encode(self, ipa: str) -> List[int]:
        ids = self.phone_to_id()
        return [ids[p] for p in self.tokenize(ipa)]

    def decode(self, ids: Sequence[int]) -> List[str]:
        out = []
        for i in ids:
            if not 0 <= int(i) < len(self.phones):
                raise ValueError(f"phone id {i} outside inventory {self.name} (0..{self.size - 1})")
            out.append(self.phones[int(i)])
        return out


@lru_cache(maxsize=None)
def _phones_by_first_char(inventory: PhoneInventory) -> Dict[str, Tuple[str, ...]]:
    """Candidate phones per first character, longest first (greedy longest match)."""
    table: Dict[str, List[str]] = {}
    for phone in sorted(inventory.phones, key=len, reverse=True):
        table.setdefault(phone[0], []).append(phone)
    return {c: tuple(p) for c, p in table.items()}


@lru_cache(maxsize=None)
def _phone_ids(inventory: PhoneInventory) -> Dict[str, int]:
    return {p: i for i, p in enumerate(inventory.phones)}


@lru_cache(maxsize=16)
def load_inventory(name: str = DEFAULT_INVENTORY) -> PhoneInventory:
    """Loads an inventory from a path, or by file name from the packaged schemas."""
    import os

    if os.path.sep in name or os.path.exists(name):
        with open(name, encoding="utf-8") as f:
            spec = json.load(f)
    else:
        spec = json.loads(resources.files("speechpipe.schemas").joinpath(name).read_text("utf-8"))
    phones = tuple(unicodedata.normalize("NFC", p["ipa"]) for p in spec["phones"])
    return PhoneInventory(name=spec["name"], phones=phones, ignored=frozenset(spec.get("ignored", {})))


def default_inventory() -> PhoneInventory:
    return load_inventory(DEFAULT_INVENTORY)
