"""The demo corpus: German speech synthesised with espeak-ng, with IPA transcripts."""
