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
    """Corpus and per-utterance PER of greedy (beam_width 0), beam-search or, with `lm_decoder`,
    LM-scored beam-search decoding, and the first `samples` reference / hypothesis pairs spelt
    with `phones`."""
    result = PERResult()
    shown: List[Dict[str, str]] = []
    for batch in transcribed_batches(files, batch_size):
        logits, lengths = forward(batch["features"], batch["num_frames"])
        if lm_decoder is not None:
            decoded = lm_decoder.decode_batch(log_softmax(logits), lengths)
        elif beam_width:
            decoded = beam_decode(logits, lengths, blank_id, beam_width)
        else:
            decoded = greedy_decode(logits, lengths, blank_id)
        for utterance, reference, hypothesis in zip(batch["utterance"].numpy(), batch["phone_ids"].numpy(), decoded):
            ref = [int(k) for k in reference if k >= 0]
            result.add(utterance.decode(), ref, hypothesis)
            if phones is not None and len(shown) < samples:
                shown.append(
                    {
                        "utterance": utterance.decode(),
                        "reference": " ".join(phones[k] for k in ref),
                        "hypothesis": " ".join(phones[k] for k in hypothesis),
                    }
                )
    return result, shown
