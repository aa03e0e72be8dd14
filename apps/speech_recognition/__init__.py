"""The speech-recognition app (textbook section 9.2): a declaration over the encoder-decoder engine (``apps/seq2seq.py``).

Example::

    from apps.speech_recognition import SpeechRecognitionApp, SpeechRecognitionConfig

    app = SpeechRecognitionApp()
    config = SpeechRecognitionConfig(limit=50, hidden_dim=32, num_heads=2, intermediate_dim=64, num_layers=1,
                                     num_mel_bins=40, runs_dir="/tmp/runs")
    model = app.build_model(config)       # tiny random-weight Whisper, character tokenizer
    recordings, transcripts = app.load_texts(config, "test")
    app.generate(model, config, recordings[:2], beam_size=1, max_length=8)
"""

from apps.speech_recognition.app import SpeechRecognitionApp, SpeechRecognitionConfig

__all__ = ["SpeechRecognitionApp", "SpeechRecognitionConfig"]
