"""Audio front end: decoding to 16 kHz mono, log-mel features, chunking, and the training waveform cache.

Names are re-exported lazily so ``import focaltag.audio`` (for the constants) does not import torch.
"""

from __future__ import annotations

from focaltag._lazy import lazy_exports

SAMPLE_RATE: int = 16000
"""Every model and the cache work at 16 kHz (the paper resamples all audio to 16 kHz)."""

CHUNK_SAMPLES: int = 73600
"""The paper's training/evaluation chunk: 73,600 samples = 4.6 s at 16 kHz."""

WON2020_CHUNK_SAMPLES: int = 59049
"""Won et al. (2020) short-chunk length: 3^10 = 59,049 samples (~3.69 s at 16 kHz)."""

# public name -> submodule that defines it
_LAZY: dict[str, str] = {
    "load_audio": "focaltag.audio.decode",
    "iter_audio_blocks": "focaltag.audio.decode",
    "audio_info": "focaltag.audio.decode",
    "AudioInfo": "focaltag.audio.decode",
    "LogMelSpectrogram": "focaltag.audio.features",
    "chunk_starts": "focaltag.audio.chunks",
    "pad_to": "focaltag.audio.chunks",
    "WaveformCache": "focaltag.audio.cache",
    "prepare_cache": "focaltag.audio.cache",
}

__all__ = ["SAMPLE_RATE", "CHUNK_SAMPLES", "WON2020_CHUNK_SAMPLES", *_LAZY]


__getattr__, __dir__ = lazy_exports(__name__, globals(), _LAZY)
