"""Speech training procedures (textbook section 9.2), not layers and not an app.

* ``speech.wav2vec2_pretraining``: Wav2Vec 2.0's self-supervised pre-training
  (span masking, sampled distractors, the contrastive and diversity losses,
  Gumbel temperature schedule) over ``layers.wav2vec2.Wav2Vec2Pretrainer``.
* ``speech.ctc``: CTC over characters: the loss, best-path and prefix beam
  decoding, fine-tuning a ``Wav2Vec2CTC``, and ``CTCRecognizer`` (the model the
  speech-recognition app trains through the shared trainer).

The layers are in ``layers/whisper.py`` and ``layers/wav2vec2.py``; the app
that trains and serves them is ``apps/speech_recognition``.
"""
