"""CTC prefix beam search scored by the acoustic model and a phone n-gram LM together (shallow
fusion): a prefix's score is

    ln P_ctc(prefix | frames) + lm_weight * ln P_lm(prefix) + insertion_bonus * len(prefix)

and the LM's end-of-sentence probability is added when the frames end. The bonus balances the
LM's cost per phone, which otherwise favours short transcripts (deletions).

Why not TensorFlow's `ctc_beam_search_decoder`: it takes no LM. Decoding is NumPy and Python on
the host, after the network: at each frame only the classes above `prune_log_prob` extend a
prefix (CTC's outputs are peaky, so that is the blank and a phone or two), and the LM's scores
are cached per (history, phone). On the demo's 360 test utterances it takes about 9 s on one
core, against about 2 s for the network's forward pass.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from speechpipe.io import storage
from speechpipe.phones.ctc_config import PhoneLMConfig
from speechpipe.phones.phone_lm import SENTENCE_END, SENTENCE_START, PhoneLM

# Beside the SavedModel's other assets: the model carries the LM it was evaluated with.
LM_FILE = "phone_lm.arpa"
LM_SETTINGS_FILE = "phone_lm.json"

_IMPOSSIBLE = -1e30  # ln 0, finite so that logaddexp stays quiet


class LMBeamDecoder:
    """Decodes frame log probabilities [frames, classes] (blank included) into phone ids."""

    def __init__(
        self,
        lm: PhoneLM,
        phones: Sequence[str],
        blank_id: int,
        lm_weight: float = 0.3,
        insertion_bonus: float = 1.0,
        beam_width: int = 16,
        prune_log_prob: float = -10.0,
    ) -> None:
        if beam_width < 1:
            raise ValueError(f"beam_width={beam_width}: need >= 1")
        if lm_weight < 0:
            raise ValueError(f"lm_weight={lm_weight}: need >= 0")
        known = set(lm.vocabulary)
        outside = [p for p in phones if p not in known]
        if outside:
            raise ValueError(f"the phone LM does not know the recogniser's phones {outside[:10]}")
        self.lm, self.phones, self.blank_id = lm, list(phones), blank_id
        self.lm_weight, self.insertion_bonus = lm_weight, insertion_bonus
        self.beam_width, self.prune_log_prob = beam_width, prune_log_prob
        self._history = max(lm.order - 1, 0)
        self._cache: Dict[Tuple[Tuple[int, ...], int], float] = {}

    def _lm_score(self, prefix: Tuple[int, ...], phone: int) -> float:
        """ln P_lm(phone | the prefix's last phones); phone -1 is the end of the sentence."""
        history = prefix[max(len(prefix) - self._history, 0) :] if self._history else ()
        key = (history, phone)
        score = self._cache.get(key)
        if score is None:
            context = [self.phones[k] for k in history]
            if len(history) < self._history:
                context.insert(0, SENTENCE_START)
            score = self.lm.log_prob(context, SENTENCE_END if phone < 0 else self.phones[phone])
            self._cache[key] = score
        return score

    def decode(self, log_probs: np.ndarray) -> List[int]:
        """The best prefix of one utterance's frames ([frames, classes], log-softmax)."""
        blank = self.blank_id
        # prefix -> [ln P(prefix, ending in blank), ln P(prefix, ending in its last phone), LM score]
        beams: Dict[Tuple[int, ...], List[float]] = {(): [0.0, _IMPOSSIBLE, 0.0]}
        for row in log_probs:
            candidates = np.flatnonzero(row > self.prune_log_prob)
            extended: Dict[Tuple[int, ...], List[float]] = {}
            add = _merger(extended)
            for prefix, (p_blank, p_phone, lm) in beams.items():
                total = np.logaddexp(p_blank, p_phone)
                last = prefix[-1] if prefix else -1
                for c in candidates:
                    c, p = int(c), float(row[c])
                    if c == blank:
                        add(prefix, total + p, _IMPOSSIBLE, lm)
                    elif c == last:
                        # A repeat only extends the prefix after a blank; without one it merges.
                        add(prefix + (c,), _IMPOSSIBLE, p_blank + p, lm + self._lm_score(prefix, c))
                        add(prefix, _IMPOSSIBLE, p_phone + p, lm)
                    else:
                        add(prefix + (c,), _IMPOSSIBLE, total + p, lm + self._lm_score(prefix, c))
            beams = dict(sorted(extended.items(), key=lambda item: -self._score(*item))[: self.beam_width])
        best = max(beams.items(), key=lambda item: self._score(*item, final=True))
        return list(best[0])

    def _score(self, prefix: Tuple[int, ...], entry: List[float], final: bool = False) -> float:
        lm = entry[2] + (self._lm_score(prefix, -1) if final else 0.0)
        return float(np.logaddexp(entry[0], entry[1])) + self.lm_weight * lm + self.insertion_bonus * len(prefix)

    def decode_batch(self, log_probs: np.ndarray, lengths: Sequence[int]) -> List[List[int]]:
        """Each utterance of a padded batch [batch, frames, classes] up to its length."""
        return [self.decode(rows[: int(n)]) for rows, n in zip(log_probs, np.asarray(lengths).reshape(-1))]


def _merger(extended: Dict[Tuple[int, ...], List[float]]):
    """Adds a path's probabilities to its prefix's entry in `extended` (the paths of a prefix
    are summed: that is what makes this a prefix search and not a search over paths)."""

    def add(prefix: Tuple[int, ...], p_blank: float, p_phone: float, lm: float) -> None:
        entry = extended.get(prefix)
        if entry is None:
            extended[prefix] = [p_blank, p_phone, lm]
        else:
            entry[0], entry[1] = np.logaddexp(entry[0], p_blank), np.logaddexp(entry[1], p_phone)

    return add


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Frame log probabilities from the network's logits (float64, for the sums of the search)."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def export_phone_lm(saved_model_dir: str, lm: PhoneLM, config: PhoneLMConfig, sentences: int) -> None:
    """Writes the LM (ARPA) and its decoding weights into the SavedModel's assets."""
    assets = storage.join(saved_model_dir, "assets")
    storage.makedirs(assets)
    storage.write_bytes(storage.join(assets, LM_FILE), lm.to_arpa().encode("utf-8"))
    settings = {
        **config.to_json(),
        "sentences": sentences,
        "ngrams": {str(n): c for n, c in lm.counts.items()},
        "phones": list(lm.vocabulary),  # the recogniser's class order: id k is phones[k], the blank last
    }
    storage.write_json(storage.join(assets, LM_SETTINGS_FILE), settings, indent=1)


def load_lm_decoder(
    saved_model_dir: str, phones: Optional[Sequence[str]] = None, blank_id: Optional[int] = None
) -> Optional[LMBeamDecoder]:
    """The decoder of a model exported with a phone LM; None for a model without one (exported
    with `phone_lm.order` 0, or before models carried an LM). `phones` and `blank_id` default
    to the model's own (its phones in class order, the blank after them)."""
    settings_path = storage.join(saved_model_dir, "assets", LM_SETTINGS_FILE)
    if not storage.exists(settings_path):
        return None
    settings = storage.read_json(settings_path)
    phones = list(settings["phones"]) if phones is None else list(phones)
    blank_id = len(phones) if blank_id is None else blank_id
    config = PhoneLMConfig.from_json({k: settings[k] for k in PhoneLMConfig.__dataclass_fields__})
    text = storage.read_bytes(storage.join(saved_model_dir, "assets", LM_FILE)).decode("utf-8")
    return LMBeamDecoder(
        PhoneLM.from_arpa(text, phones), phones, blank_id, config.lm_weight, config.insertion_bonus, config.beam_width
    )
