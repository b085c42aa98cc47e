"""Regression: the CTC trainer's validation PER (which picks the best weights) skipped utterances
too short for CTC to align their label, while the evaluator's test PER (which blesses) counted
them, so the weights were chosen by another figure than the one they were judged by. Both now
use speechpipe.phones.phone_error_rate: every utterance with a transcript."""

from speechpipe.components.ctc_trainer import CTCTrainConfig, evaluate_per
from speechpipe.phones.ctc_model import CTCModelConfig, build_acoustic_model, ctc_feasible, stacked_lengths
from speechpipe.phones.inventory import load_inventory
from speechpipe.phones.phone_error_rate import records_per
from tests.helpers import write_feature_split


def test_validation_and_test_per_count_the_same_utterances(tmp_path):
    config = CTCTrainConfig(model=CTCModelConfig(lstm_units=(4,), frame_stack=3), batch_size=4)
    alignable = ("long", 90, [1, 2, 3])
    too_short = ("short", 6, [1, 2, 3, 4, 5])  # 2 stacked frames for 5 phones
    untranscribed = ("silent", 50, [])
    assert ctc_feasible(alignable[2], alignable[1] // 3) and not ctc_feasible(too_short[2], too_short[1] // 3)
    split = write_feature_split(
        str(tmp_path / "Split-validation"), [alignable, too_short, untranscribed], bins=80, split="validation"
    )
    inventory = load_inventory(config.inventory)
    acoustic = build_acoustic_model(80, inventory.num_classes, config.model)
    validation = evaluate_per(acoustic, [split], config)

    def forward(features, num_frames):
        return acoustic({"features": features, "num_frames": num_frames}, training=False), stacked_lengths(
            num_frames, 3
        )

    test, _ = records_per(forward, split, inventory.blank_id, batch_size=4)
    assert set(validation.per_utterance) == set(test.per_utterance) == {"long", "short"}
    assert validation.reference_phones == test.reference_phones == 8
    assert validation.per == test.per
