"""A SYNTHETIC stand-in for MTG-Jamendo mood/theme: real tag names and imbalance, generated audio, official layout.

Every track is a shared musical background (a random chord progression of decaying harmonic notes, a drum-like
pulse and noise) plus one audible signature per tag it carries: a tone at a tag-specific pitch whose amplitude
pulses at a tag-specific rate, with a tag-specific timbre (pure, bright or breathy). Tag frequencies follow the real
split-0 training profile (imbalance factor ~15). Artists never cross splits. Nothing here is real music: results on
it show that the pipeline works and that models learn, not how they do on MTG-Jamendo.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from focaltag._io import write_json, write_text
from focaltag._progress import progress
from focaltag.data.metadata import OFFICIAL_COLUMNS, SUBSETS
from focaltag.data.tags import MOODTHEME_PREFIX, MOODTHEME_TRAIN_COUNTS
from focaltag.errors import DataError

__all__ = ["synthesize_dataset", "SynthSummary", "SYNTHETIC_NOTICE", "tag_signatures", "render_tracks"]

log = logging.getLogger(__name__)

SYNTHETIC_NOTICE = (
    "SYNTHETIC DATA: generated audio with the real MTG-Jamendo mood/theme tag names and imbalance; "
    "not real music, and scores on it say nothing about MTG-Jamendo."
)
DATASET = "autotagging_moodtheme"
N_SPLITS = 5  # like the official splits/split-0 ... split-4 (split-0 keeps the tag profile exactly)
SPLIT_SHARE = {"train": 0.55, "validation": 0.21, "test": 0.24}  # official split-0: 9,949 / 3,802 / 4,231
MIN_PER_TAG = {"train": 1, "validation": 1, "test": 1}
TAGS_PER_TRACK_P = (0.45, 0.33, 0.16, 0.06)  # P(1..4 tags); the real mean is ~1.8 tags per track
TAG_FREQ_RANGE = (180.0, 6500.0)
TAG_LEVEL = (0.12, 0.25)  # peak amplitude of a tag signature (the background peaks around 0.5)


@dataclass(frozen=True)
class SynthSummary:
    """What ``synthesize_dataset`` wrote."""

    out_dir: Path
    n_tracks: dict[str, int]
    n_tags: int
    imbalance_factor: float
    seconds: float
    created: int  # audio files written in this call (0 when everything existed already)


@dataclass(frozen=True)
class _TrackPlan:
    index: int
    track_id: str
    artist: int
    album: int
    rel_path: str
    duration: float
    tags: tuple[str, ...]
    subset: str


def tag_signatures() -> dict[str, dict[str, float]]:
    """The audible signature of each tag: pitch (Hz), pulse rate (Hz) and timbre (0 pure, 1 bright, 2 breathy)."""
    names = sorted(MOODTHEME_TRAIN_COUNTS)
    rng = np.random.default_rng(20201016)
    lo, hi = (2595.0 * np.log10(1.0 + f / 700.0) for f in TAG_FREQ_RANGE)
    mels = np.linspace(lo, hi, len(names))
    freqs = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    order = rng.permutation(len(names))  # do not tie pitch to alphabetical order
    rates = np.linspace(1.5, 9.0, len(names))[rng.permutation(len(names))]
    return {
        name: {"freq": float(freqs[order[i]]), "rate": float(rates[i]), "timbre": float(i % 3)}
        for i, name in enumerate(names)
    }


def _split_of_artists(n_artists: int, rng: np.random.Generator) -> list[str]:
    cuts = np.cumsum([SPLIT_SHARE[s] for s in SUBSETS])
    order = rng.permutation(n_artists)
    out = [""] * n_artists
    for rank, a in enumerate(order):
        pos = (rank + 0.5) / n_artists
        out[a] = SUBSETS[int(np.searchsorted(cuts, pos))]
    return out


def _assign_tags(n: int, subset: str, rng: np.random.Generator) -> list[tuple[str, ...]]:
    """Tag sets for ``n`` tracks whose per-tag totals follow the real profile, every tag at least MIN times."""
    names = sorted(MOODTHEME_TRAIN_COUNTS)
    counts = np.array([MOODTHEME_TRAIN_COUNTS[t] for t in names], dtype=float)
    k = rng.choice(np.arange(1, 5), size=n, p=TAGS_PER_TRACK_P)
    total = int(k.sum())
    quota = np.maximum(MIN_PER_TAG[subset], np.round(total * counts / counts.sum())).astype(int)
    # make the capacity (1..4 tags per track) match the quotas exactly
    while quota.sum() > k.sum():
        room = np.flatnonzero(k < 4)
        if room.size:
            k[rng.choice(room)] += 1
        else:
            quota[np.argmax(quota)] -= 1
    while quota.sum() < k.sum():
        many = np.flatnonzero(k > 1)
        if many.size:
            k[rng.choice(many)] -= 1
        else:
            quota[np.argmax(counts)] += 1
    pool = np.repeat(np.arange(len(names)), quota)
    rng.shuffle(pool)
    pool = pool[np.argsort(-quota[pool], kind="stable")]  # place frequent tags first, rare ones fill the gaps
    slots: list[set[int]] = [set() for _ in range(n)]
    for tag in pool:
        free = [i for i in range(n) if len(slots[i]) < k[i] and tag not in slots[i]]
        if not free:
            free = [i for i in range(n) if len(slots[i]) < 4 and tag not in slots[i]]
        if free:
            slots[int(rng.choice(free))].add(int(tag))
    for i in range(n):  # every track has at least one tag
        if not slots[i]:
            slots[i].add(int(rng.choice(len(names), p=counts / counts.sum())))
    return [tuple(MOODTHEME_PREFIX + names[j] for j in sorted(s)) for s in slots]


def _plan(n_tracks: int, seed: int, min_duration: float, max_duration: float) -> list[_TrackPlan]:
    rng = np.random.default_rng(seed)
    sizes: list[int] = []
    while sum(sizes) < n_tracks:  # artists with 1-6 tracks
        sizes.append(int(rng.integers(1, 7)))
    sizes[-1] -= sum(sizes) - n_tracks
    subsets = _split_of_artists(len(sizes), rng)
    for s in SUBSETS:  # every split gets at least one artist
        if s not in subsets:
            big = int(np.argmax([sz if subsets.count(subsets[i]) > 1 else 0 for i, sz in enumerate(sizes)]))
            subsets[big] = s
    artist_of = np.repeat(np.arange(len(sizes)), sizes)
    by_subset = {s: [i for i in range(n_tracks) if subsets[artist_of[i]] == s] for s in SUBSETS}
    tags: dict[int, tuple[str, ...]] = {}
    for s, idx in by_subset.items():
        for i, t in zip(idx, _assign_tags(len(idx), s, rng), strict=True):
            tags[i] = t
    durations = np.round(rng.uniform(min_duration, max_duration, size=n_tracks), 1)
    ids = np.sort(rng.choice(np.arange(1000, 1_500_000), size=n_tracks, replace=False))
    plans = []
    for i in range(n_tracks):
        tid = int(ids[i])
        artist = int(artist_of[i])
        plans.append(_TrackPlan(
            index=i, track_id=f"track_{tid:07d}", artist=artist, album=artist * 3 + int(rng.integers(0, 2)),
            rel_path=f"{tid % 100:02d}/{tid}.mp3", duration=float(durations[i]), tags=tags[i],
            subset=subsets[artist]))
    return plans


def _other_splits(plans: Sequence[_TrackPlan], seed: int, n_splits: int) -> list[dict[int, str]]:
    """Subset of every track in splits 1..n-1, as the official splits: other artist partitions in which every
    tag still occurs in train, validation and test and no artist crosses subsets.

    Each split starts from split-0's partition and makes random swaps of two artists between subsets, keeping a
    swap only when both subsets still carry every tag, so the number of artists per subset (the shares) stays
    that of split-0. Small datasets have tags with one carrier per subset, which allows few such swaps; there,
    once strict swaps are exhausted, validation and test may lose a rare tag (train never does, so the
    vocabulary is the same in every split) until an eighth of the artists have moved.
    """
    from collections import Counter

    n_artists = max(p.artist for p in plans) + 1
    tags_of: list[set[str]] = [set() for _ in range(n_artists)]
    split0: list[str] = [""] * n_artists
    for p in plans:
        tags_of[p.artist] |= set(p.tags)
        split0[p.artist] = p.subset
    out = []
    for k in range(1, n_splits):
        rng = np.random.default_rng([seed, 7919, k])
        assign = list(split0)
        carriers = {s: Counter(t for a in range(n_artists) if assign[a] == s for t in tags_of[a]) for s in SUBSETS}

        def keeps(have: Counter[str], sub: str, leaving: int, coming: int, strict: bool) -> bool:
            if not strict and sub != "train":
                return True
            return all(have[t] - 1 + (t in tags_of[coming]) >= 1 for t in tags_of[leaving])

        for strict in (True, False):
            for _ in range(30 * n_artists):
                if not strict and sum(x != y for x, y in zip(assign, split0, strict=True)) >= n_artists / 8:
                    break
                a, b = (int(x) for x in rng.integers(0, n_artists, size=2))
                sa, sb = assign[a], assign[b]
                if sa == sb or not (keeps(carriers[sa], sa, a, b, strict) and keeps(carriers[sb], sb, b, a, strict)):
                    continue
                carriers[sa].subtract(tags_of[a])
                carriers[sa].update(tags_of[b])
                carriers[sb].subtract(tags_of[b])
                carriers[sb].update(tags_of[a])
                assign[a], assign[b] = sb, sa
        out.append({p.index: assign[p.artist] for p in plans})
    return out


RENDER_RATE = 22050  # everything synthesized lies below 8 kHz; rendered here, then upsampled with soxr


def _render(plan: _TrackPlan, seed: int, out_rate: int) -> np.ndarray:
    """Stereo float32 audio of one track: artist-flavoured background plus each tag's signature."""
    import soxr

    sr = RENDER_RATE
    rng = np.random.default_rng([seed, plan.index])
    artist_rng = np.random.default_rng([seed, 1_000_000 + plan.artist])
    n = int(round(plan.duration * sr))
    t = np.arange(n, dtype=np.float64) / sr
    mono = np.zeros(n)
    # background: chord progression of decaying harmonic notes, in the artist's key and tempo
    root = 110.0 * 2 ** (artist_rng.integers(0, 12) / 12)
    bpm = artist_rng.uniform(70, 150)
    beat = 60.0 / bpm
    n_harm = int(artist_rng.integers(3, 7))
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12, 14, 16])
    note_len = beat * int(rng.choice([1, 2]))
    starts = np.arange(0.0, plan.duration, note_len)
    for s0 in starts:
        i0, i1 = int(s0 * sr), min(n, int((s0 + note_len * 1.5) * sr))
        seg = t[i0:i1] - s0
        env = np.exp(-seg * rng.uniform(1.5, 4.0))
        for step in rng.choice(scale, size=2, replace=False):
            f = root * 2 ** (step / 12)
            for h in range(1, n_harm + 1):
                if f * h < 7500:
                    mono[i0:i1] += 0.12 / h * env * np.sin(2 * np.pi * f * h * seg + rng.uniform(0, 6.3))
    # drum-like pulse on the beat
    for s0 in np.arange(0.0, plan.duration, beat):
        i0, i1 = int(s0 * sr), min(n, int((s0 + 0.12) * sr))
        seg = t[i0:i1] - s0
        mono[i0:i1] += 0.25 * np.exp(-seg * 35) * np.sin(2 * np.pi * 60 * seg)
    mono += 0.02 * rng.standard_normal(n)
    # tag signatures: pulsing tones with a tag-specific timbre, present for most of the track
    sigs = tag_signatures()
    for full in plan.tags:
        sig = sigs[full.split("---", 1)[1]]
        f, rate, timbre = sig["freq"] * rng.uniform(0.985, 1.015), sig["rate"], int(sig["timbre"])
        amp = rng.uniform(*TAG_LEVEL)
        pulse = 0.55 + 0.45 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 6.3))
        tone = np.sin(2 * np.pi * f * t + 0.3 * np.sin(2 * np.pi * 5.0 * t))
        if timbre == 1 and 2 * f < 7800:  # bright: add the octave
            tone += 0.5 * np.sin(2 * np.pi * 2 * f * t)
        elif timbre == 2:  # breathy: noise amplitude-modulated by the tone
            tone = 0.6 * tone + 0.6 * tone * rng.standard_normal(n)
        gate = np.ones(n)
        for _ in range(int(rng.integers(0, 2))):  # a short gap: the trace is not in every second
            g0 = int(rng.uniform(0, max(plan.duration - 2, 0.1)) * sr)
            gate[g0:g0 + int(rng.uniform(0.5, 1.5) * sr)] = 0.0
        mono += amp * pulse * tone * gate
    # a faint distractor: another tag's pitch at low level, so the task is not trivially separable
    if rng.random() < 0.3:
        other = sigs[str(rng.choice(sorted(sigs)))]
        mono += 0.02 * np.sin(2 * np.pi * other["freq"] * t)
    mono /= max(1.0, float(np.max(np.abs(mono))) / 0.9)
    pan = rng.uniform(0.8, 1.0)
    mono = soxr.resample(mono.astype(np.float32), sr, out_rate, quality="HQ")
    stereo = np.stack([mono * pan, mono * (2 - pan) / 1.2], axis=1)
    return np.clip(stereo, -1.0, 1.0).astype(np.float32)


def render_tracks(n_tracks: int, *, seed: int = 0, sample_rate: int = 16000,
                  duration: float = 30.0) -> list[np.ndarray]:
    """``n_tracks`` generated mono tracks of ``duration`` seconds at ``sample_rate`` (float32, deterministic).

    Audio that focaltag makes itself, for work that must not read a user's files: int8 calibration
    (:mod:`focaltag.inference.int8`).
    """
    plans = [dataclasses.replace(p, duration=float(duration)) for p in _plan(max(n_tracks, 30), seed, 20.0, 60.0)]
    return [_render(p, seed, sample_rate).mean(axis=1, dtype=np.float32) for p in plans[:n_tracks]]


def _write_track(args: tuple[_TrackPlan, int, int, str]) -> bool:
    import soundfile as sf

    plan, seed, sr, audio_dir = args
    dest = Path(audio_dir) / plan.rel_path
    if dest.is_file() and dest.stat().st_size > 0:
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    sf.write(tmp, _render(plan, seed, sr), sr, format="MP3", compression_level=0.9)
    os.replace(tmp, dest)
    return True


def _tsv_text(plans: Sequence[_TrackPlan]) -> str:
    rows = ["\t".join(OFFICIAL_COLUMNS)]
    for p in plans:
        rows.append("\t".join([p.track_id, f"artist_{p.artist:06d}", f"album_{p.album:06d}", p.rel_path,
                               f"{p.duration:.1f}", *p.tags]))
    return "\r\n".join(rows) + "\r\n"  # the official files use CRLF


def synthesize_dataset(out_dir: str | os.PathLike[str], *, n_tracks: int = 300, seed: int = 0,
                       min_duration: float = 20.0, max_duration: float = 60.0, sample_rate: int = 44100,
                       workers: int | None = None) -> SynthSummary:
    """Write a SYNTHETIC dataset in the exact MTG-Jamendo layout (audio/NN/ID.mp3 + splits/split-{0..4}/*.tsv).

    Deterministic for a seed; existing audio files are kept, so an interrupted run continues.
    """
    if n_tracks < 30:
        raise DataError(f"--tracks must be at least 30 (three splits with every tag need it), got {n_tracks}")
    if not 1.0 <= min_duration <= max_duration:
        raise DataError(f"durations need 1 <= min ({min_duration}) <= max ({max_duration}) seconds")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".focaltag-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise DataError(f"cannot write to --out {out}: {err.strerror or err}; choose a writable folder") from None
    plans = _plan(n_tracks, seed, min_duration, max_duration)
    audio_dir = out / "audio"
    jobs = [(p, seed, sample_rate, str(audio_dir)) for p in plans]
    workers = workers or min(os.cpu_count() or 1, 8)
    created = 0
    bar = progress(total=len(jobs), desc="synthesizing audio (SYNTHETIC)", unit="track")
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for made in pool.map(_write_track, jobs, chunksize=4):
                created += made
                bar.update()
    else:
        for job in jobs:
            created += _write_track(job)
            bar.update()
    bar.close()
    split_dir = out / "splits" / "split-0"
    for s in SUBSETS:
        write_text(split_dir / f"{DATASET}-{s}.tsv", _tsv_text([p for p in plans if p.subset == s]))
    for k, subset_of in enumerate(_other_splits(plans, seed, N_SPLITS), start=1):
        for s in SUBSETS:
            write_text(out / "splits" / f"split-{k}" / f"{DATASET}-{s}.tsv",
                       _tsv_text([p for p in plans if subset_of[p.index] == s]))
    write_text(out / f"{DATASET}.tsv", _tsv_text(plans))
    counts = {t: 0 for t in MOODTHEME_TRAIN_COUNTS}
    for p in plans:
        if p.subset == "train":
            for tag in p.tags:
                counts[tag.split("---", 1)[1]] += 1
    present = [c for c in counts.values() if c]
    imbalance = max(present) / min(present)
    write_text(out / "SYNTHETIC_DATASET.txt", SYNTHETIC_NOTICE + "\nCreated by `focaltag data synth`; "
               "layout and tag names follow MTG-Jamendo autotagging_moodtheme (five splits, split-0 to split-4).\n")
    write_json(out / "synth.json", {
        "notice": SYNTHETIC_NOTICE, "seed": seed, "n_tracks": n_tracks, "min_duration": min_duration,
        "max_duration": max_duration, "sample_rate": sample_rate,
        "tsv_sha256": {s: hashlib.sha256((split_dir / f"{DATASET}-{s}.tsv").read_bytes()).hexdigest()
                       for s in SUBSETS},
        "tag_signatures": tag_signatures(),
    })
    n_by = {s: sum(p.subset == s for p in plans) for s in SUBSETS}
    return SynthSummary(out, n_by, len(present), round(imbalance, 2),
                        round(sum(p.duration for p in plans), 1), created)
