"""Phones and the CTC recogniser: the IPA phone inventories and tokenizer, and the BLSTM + CTC
model with its decoders and phone error rate."""
