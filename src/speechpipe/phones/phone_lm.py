"""A phone n-gram language model for CTC decoding: interpolated Kneser-Ney, fitted on phone
transcripts, written and read in the ARPA format (the one SRILM and KenLM write, so a user can
bring an LM fitted on more text than the acoustic transcripts: `speechpipe.phones.phonemizer`
turns text into phones).

Why an LM over phones: the recogniser's test errors are on sentences it has not heard
(docs/ctc.md), and what carries over from the training sentences to new ones is which phones
follow which (German phonotactics, frequent words). The BLSTMs learn some of that; a beam search
scored by the acoustic model and this LM together recovers the short consonants and vowel
lengths the acoustic scores alone leave ambiguous.

The model is exact in its ARPA form: a seen n-gram's probability is stored interpolated with the
lower orders, and a context's backoff weight is the mass its discounts set aside, so
P(w | h) = P_stored(h w) if h w was seen, else backoff(h) * P(w | h without its first phone).
Every phone of the vocabulary has a unigram (unseen ones get the uniform floor's share), so
every phone has a probability after every context, and they sum to one with the end of sentence.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Dict, Iterable, List, Sequence, Set, TextIO, Tuple

SENTENCE_START = "<s>"
SENTENCE_END = "</s>"
_LOG10 = math.log(10.0)
_NO_PROBABILITY = -99.0  # ARPA's log10 probability of <s>, which is never predicted

NGram = Tuple[str, ...]


class NoSentenceError(ValueError):
    """Nothing to fit an LM on (a training split without transcripts)."""


class PhoneLM:
    """Log probabilities (natural log) of the next phone after a context of phones."""

    def __init__(
        self, order: int, vocabulary: Sequence[str], log10_probs: Dict[NGram, float], log10_backoffs: Dict[NGram, float]
    ) -> None:
        if order < 1:
            raise ValueError(f"order={order}: an n-gram model needs n >= 1")
        self.order = order
        self.vocabulary = tuple(vocabulary)
        self._probs = log10_probs
        self._backoffs = log10_backoffs
        missing = [p for p in (*self.vocabulary, SENTENCE_END) if (p,) not in self._probs]
        if missing:
            raise ValueError(f"the LM has no unigram for {missing[:10]} ({len(missing)} symbols)")

    @property
    def counts(self) -> Dict[int, int]:
        """How many n-grams of each order the model stores (ARPA's \\data\\ section)."""
        sizes: Counter = Counter(len(g) for g in self._probs)
        return {n: sizes[n] for n in range(1, self.order + 1)}

    def log_prob(self, context: Sequence[str], phone: str) -> float:
        """ln P(phone | context); `context` starts with SENTENCE_START at the start of a sentence,
        and `phone` may be SENTENCE_END."""
        history = tuple(context[len(context) - (self.order - 1) :]) if self.order > 1 else ()
        backoff = 0.0
        while True:
            stored = self._probs.get(history + (phone,))
            if stored is not None:
                return (stored + backoff) * _LOG10
            if not history:
                raise KeyError(f"{phone!r} is not in the LM's vocabulary")
            backoff += self._backoffs.get(history, 0.0)
            history = history[1:]

    # -------------------------------------------------------------------------------- fitting

    @classmethod
    def fit(cls, sentences: Iterable[Sequence[str]], order: int, vocabulary: Sequence[str]) -> "PhoneLM":
        """Interpolated Kneser-Ney with one discount per order
        (Ney's estimate n1 / (n1 + 2 n2) from the order's count-of-counts), lower orders on
        continuation counts, the unigrams interpolated with the uniform distribution over
        `vocabulary` and SENTENCE_END."""
        if order < 1:
            raise ValueError(f"order={order}: an n-gram model needs n >= 1")
        adjusted = _adjusted_counts(_raw_counts(sentences, order, set(vocabulary)), order)
        probs, gammas = _interpolate(adjusted, order, vocabulary)
        log10_probs = {gram: math.log10(p) for gram, p in probs.items()}
        log10_probs[(SENTENCE_START,)] = _NO_PROBABILITY
        backoffs = {history: math.log10(gamma) for history, gamma in gammas.items() if history}
        return cls(order, vocabulary, log10_probs, backoffs)

    # -------------------------------------------------------------------------------- ARPA

    def write_arpa(self, out: TextIO) -> None:
        """The model in the ARPA text format (log10 probabilities and backoff weights)."""
        by_order: Dict[int, List[NGram]] = defaultdict(list)
        for gram in self._probs:
            by_order[len(gram)].append(gram)
        out.write("\\data\\\n")
        for n in range(1, self.order + 1):
            out.write(f"ngram {n}={len(by_order[n])}\n")
        for n in range(1, self.order + 1):
            out.write(f"\n\\{n}-grams:\n")
            for gram in sorted(by_order[n]):
                line = f"{self._probs[gram]:.7f}\t{' '.join(gram)}"
                if n < self.order and gram in self._backoffs:
                    line += f"\t{self._backoffs[gram]:.7f}"
                out.write(line + "\n")
        out.write("\n\\end\\\n")

    def to_arpa(self) -> str:
        import io

        out = io.StringIO()
        self.write_arpa(out)
        return out.getvalue()

    @classmethod
    def from_arpa(cls, text: str, vocabulary: Sequence[str]) -> "PhoneLM":
        """Reads an ARPA model; `vocabulary` is the recogniser's phones, each of which the model
        must have a unigram for (else the decoder could not score it: a clear error here, not
        a KeyError in the middle of decoding)."""
        probs: Dict[NGram, float] = {}
        backoffs: Dict[NGram, float] = {}
        declared: Dict[int, int] = {}
        section = None
        for number, line in enumerate(text.splitlines(), start=1):
            line = line.strip()
            if not line:
                continue
            if line == "\\data\\":
                section = "data"
            elif line == "\\end\\":
                section = "end"
            elif line.startswith("\\") and line.endswith("-grams:"):
                section = int(line[1 : -len("-grams:")])
            elif section == "data" and line.startswith("ngram "):
                n, count = line[len("ngram ") :].split("=")
                declared[int(n)] = int(count)
            elif isinstance(section, int):
                fields = line.split()
                if len(fields) not in (section + 1, section + 2):
                    raise ValueError(
                        f"ARPA line {number}: {section}-gram needs {section + 1} or {section + 2} fields: {line!r}"
                    )
                gram = tuple(fields[1 : section + 1])
                probs[gram] = float(fields[0])
                if len(fields) == section + 2:
                    backoffs[gram] = float(fields[-1])
            else:
                raise ValueError(f"ARPA line {number} outside a section: {line!r}")
        if section != "end" or not declared:
            raise ValueError("not an ARPA model: it needs a \\data\\ section and ends with \\end\\")
        found: Counter = Counter(len(g) for g in probs)
        wrong = {n: (declared[n], found[n]) for n in declared if declared[n] != found[n]}
        if wrong:
            raise ValueError(f"ARPA counts disagree with its n-grams (declared, found): {wrong}")
        return cls(max(declared), vocabulary, probs, backoffs)


def _raw_counts(sentences: Iterable[Sequence[str]], order: int, known: Set[str]) -> List[Counter]:
    """raw[n][ngram]: how often each n-gram (n = 1..order) occurs, the sentences framed by <s>
    and </s>; <s> is a context, never predicted, so it has no unigram."""
    raw: List[Counter] = [Counter() for _ in range(order + 1)]
    seen = 0
    for sentence in sentences:
        outside = [p for p in sentence if p not in known]
        if outside:
            raise ValueError(f"phones {sorted(set(outside))} are not in the vocabulary of {len(known)} phones")
        tokens = (SENTENCE_START, *sentence, SENTENCE_END)
        seen += 1
        for n in range(1, order + 1):
            for i in range(1 if n == 1 else 0, len(tokens) - n + 1):
                raw[n][tokens[i : i + n]] += 1
    if not seen:
        raise NoSentenceError("no sentence to fit a phone LM on")
    return raw


def _adjusted_counts(raw: List[Counter], order: int) -> List[Counter]:
    """Kneser-Ney's counts: the highest order and the n-grams that start a sentence keep theirs;
    every other n-gram counts the distinct phones (or <s>) seen before it, so that a phone heard
    after many contexts outweighs a frequent one heard after one."""
    adjusted: List[Counter] = [Counter() for _ in range(order + 1)]
    adjusted[order] = raw[order]
    for n in range(1, order):
        for gram, count in raw[n].items():
            if gram[0] == SENTENCE_START:
                adjusted[n][gram] = count
        for longer in raw[n + 1]:
            adjusted[n][longer[1:]] += 1
    return adjusted


def _interpolate(
    adjusted: List[Counter], order: int, vocabulary: Sequence[str]
) -> Tuple[Dict[NGram, float], Dict[NGram, float]]:
    """(P(gram), gamma(history)), linear: each order's discounted counts interpolated with the
    orders below, the unigrams with the uniform distribution; gamma(history) is the mass the
    history's discount set aside, which the ARPA form keeps as its backoff weight."""
    uniform = 1.0 / (len(set(vocabulary)) + 1)
    probs: Dict[NGram, float] = {}
    gammas: Dict[NGram, float] = {}

    def below(history: NGram, phone: str) -> float:
        """P(phone | history) of the orders fitted so far, backing off to the uniform floor."""
        weight = 1.0
        while True:
            stored = probs.get(history + (phone,))
            if stored is not None:
                return weight * stored
            if not history:
                return weight * uniform
            weight *= gammas.get(history, 1.0)
            history = history[1:]

    for n in range(1, order + 1):
        discount = _discount(adjusted[n])
        by_history: Dict[NGram, Dict[str, int]] = defaultdict(dict)
        for gram, count in adjusted[n].items():
            if count > 0:
                by_history[gram[:-1]][gram[-1]] = count
        this_order: Dict[NGram, float] = {}
        this_gammas: Dict[NGram, float] = {}
        for history, following in by_history.items():
            total = sum(following.values())
            gamma = discount * len(following) / total
            this_gammas[history] = gamma
            for phone, count in following.items():
                lower = below(history[1:], phone) if n > 1 else uniform
                this_order[history + (phone,)] = max(count - discount, 0.0) / total + gamma * lower
        if n == 1:  # every phone gets a unigram, heard or not
            for phone in (*vocabulary, SENTENCE_END):
                this_order.setdefault((phone,), this_gammas.get((), 1.0) * uniform)
        gammas.update(this_gammas)
        probs.update(this_order)
    return probs, gammas


def _discount(counts: Counter) -> float:
    """Ney's absolute discount n1 / (n1 + 2 n2), kept inside (0, 1); 0.5 where an order has no
    singletons or doubletons to estimate it from (a tiny corpus)."""
    n1 = sum(1 for c in counts.values() if c == 1)
    n2 = sum(1 for c in counts.values() if c == 2)
    if n1 == 0 or n2 == 0:
        return 0.5
    return min(max(n1 / (n1 + 2.0 * n2), 0.05), 0.95)
