"""Phones and the CTC recogniser: the IPA phone inventories and tokenizer, and the BLSTM + CTC
model with its decoders and phone error rate, and the espeak-ng engine that phonemises text (the
demo corpus synthesises speech with the same engine)."""
