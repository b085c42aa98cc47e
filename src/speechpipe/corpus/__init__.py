"""The demo corpus: German speech synthesised with espeak-ng (the engine lives in
speechpipe.phones.espeak, which the phonemiser shares), with IPA transcripts."""
