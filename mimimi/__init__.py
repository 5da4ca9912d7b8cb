"""MIMIMI: machine-sound anomaly detection with a self-supervised complex network.

data (index, audio, synth, download, datasets) -> features (complex STFT, log-mel, cache)
-> model -> train -> evaluate -> tune -> track.
"""
__version__ = "0.1.0"
