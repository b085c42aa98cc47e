"""The one definition of a CTC model's phone error rate on feature records, which the trainer's
validation (choosing the best weights) and the evaluator's test (blessing) both use.

Every utterance with a transcript counts, also one too short for CTC to align its label (the
trainer cannot learn from it, but a user's audio is what it is: the deletions it forces are real
errors). Utterances without a transcript are not scored; the caller's input counts report them.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import tensorflow as tf

from speechpipe.phones.ctc_lm_decoder import LMBeamDecoder, log_softmax
from speechpipe.phones.ctc_model import PERResult, beam_decode, greedy_decode

# (features [batch, frames, bins], num_frames [batch]) -> (logits [batch, steps, classes], lengths [batch])
Forward = Callable[[tf.Tensor, tf.Tensor], Tuple[tf.Tensor, tf.Tensor]]


def transcribed_batches(files: Union[str, Sequence[str], tf.data.Dataset], batch_size: int) -> tf.data.Dataset:
    """Padded batches of the records that have a transcript (phone_ids padded with -1). `files`
    may be a dataset of parsed records (e.g. one that counts what it reads) instead of files."""
    from speechpipe.training import record_dataset

    records = files if isinstance(files, tf.data.Dataset) else record_dataset(files)
    return records.filter(lambda e: tf.size(e["phone_ids"]) > 0).padded_batch(
        batch_size,
        padded_shapes={
            "utterance": [],
            "speaker": [],
            "session": [],
            "features": [None, None],
            "num_frames": [],
            "phone_ids": [None],
        },
        padding_values={
            "utterance": b"",
            "speaker": b"",
            "session": b"",
            "features": 0.0,
            "num_frames": 0,
            "phone_ids": -1,
        },
    )


# (logits [batch, steps, classes], lengths [batch]) -> phone ids of each utterance
Decoder = Callable[[tf.Tensor, tf.Tensor], List[List[int]]]


def decoding(blank_id: int, beam_width: int = 0, lm_decoder: Optional[LMBeamDecoder] = None) -> Decoder:
    """Greedy (beam_width 0), beam-search or, with `lm_decoder`, LM-scored beam-search decoding."""
    if lm_decoder is not None:
        return lambda logits, lengths: lm_decoder.decode_batch(log_softmax(logits), lengths)
    if beam_width:
        return lambda logits, lengths: beam_decode(logits, lengths, blank_id, beam_width)
    return lambda logits, lengths: greedy_decode(logits, lengths, blank_id)


def records_pers(
    forward: Forward,
    files: Union[str, Sequence[str], tf.data.Dataset],
    decoders: Dict[str, Decoder],
    batch_size: int = 16,
    phones: Optional[Sequence[str]] = None,
    samples: int = 0,
) -> Tuple[Dict[str, PERResult], List[Dict[str, str]]]:
    """Corpus and per-utterance PER of each named decoding, all from one read of the records and
    one forward pass, and the first `samples` reference / hypothesis pairs of the first decoding,
    spelt with `phones`."""
    results = {name: PERResult() for name in decoders}
    shown: List[Dict[str, str]] = []
    for batch in transcribed_batches(files, batch_size):
        logits, lengths = forward(batch["features"], batch["num_frames"])
        references = [[int(k) for k in row if k >= 0] for row in batch["phone_ids"].numpy()]
        utterances = [u.decode() for u in batch["utterance"].numpy()]
        for index, (name, decode) in enumerate(decoders.items()):
            for utterance, ref, hypothesis in zip(utterances, references, decode(logits, lengths)):
                results[name].add(utterance, ref, hypothesis)
                if index == 0 and phones is not None and len(shown) < samples:
                    shown.append(
                        {
                            "utterance": utterance,
                            "reference": " ".join(phones[k] for k in ref),
                            "hypothesis": " ".join(phones[k] for k in hypothesis),
                        }
                    )
    return results, shown


def records_per(
    forward: Forward,
    files: Union[str, Sequence[str], tf.data.Dataset],
    blank_id: int,
    batch_size: int = 16,
    beam_width: int = 0,
    phones: Optional[Sequence[str]] = None,
    samples: int = 0,
    lm_decoder: Optional[LMBeamDecoder] = None,
) -> Tuple[PERResult, List[Dict[str, str]]]:
    """Corpus and per-utterance PER of one decoding (`decoding`), and the first `samples`
    reference / hypothesis pairs spelt with `phones`."""
    results, shown = records_pers(
        forward, files, {"per": decoding(blank_id, beam_width, lm_decoder)}, batch_size, phones, samples
    )
    return results["per"], shown
