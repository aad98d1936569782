"""Build the real-music set that ``bench/similar.py`` and ``bench/heads.py`` measure on, from Debian packages.

Why Debian packages: they are the one source of real, freely licensed recordings this project can reach
(PyPI, npm and Debian only), they are pinned by version, and their copyright files and the files' own tags say
who made each track and under which licence. Every package below is a free game's soundtrack or song pack in
Debian 12 ("bookworm") main.

What it builds, in a cache folder outside the repository (default ``~/.cache/focaltag-bench/music``; no audio
is ever committed):

- ``debs/``: the ``.deb`` files, fetched with ``apt-get download NAME=VERSION`` (run ``apt-get update`` once
  first); ``extract/NAME/``: each unpacked with ``dpkg-deb -x``.
- ``excerpts/ALBUM/TRACK.flac``: one 29 s excerpt per track (mono, 22,050 Hz, 16-bit FLAC), starting 30 % into
  the track (clamped so it ends by the track's end). One excerpt per track, so that same-album retrieval can
  never be won by finding another piece of the same recording. Tracks shorter than 29 s (victory and defeat
  stings) are left out; identical files (the same bytes under two names) are kept once.
- ``manifest.json``: one entry per excerpt: path (relative to the folder), album (the retrieval label), game,
  composer, title, tags, licence, the source package, its version and the file inside it.
- ``labels.csv``: ``path,tags`` with the tags ``;``-separated (the labels file of ``focaltag head train``).

Labels. The album is the album the source names: the file's ALBUM tag (Wesnoth, Endgame: Singularity, which
ships two), Warzone 2100's ``album.json`` (three albums), else the game's soundtrack as the package describes
it. Tags, for the imbalanced multi-label benchmark of ``bench/heads.py``: ``game-*`` (the package's game),
``album-*`` (only for games that ship several albums), ``composer-*`` (file tags, ``album.json``, the
package's copyright file, or HyperRogue's ``hyperrogue-music.txt`` credits) and ``genre-*`` (the files' GENRE
tags; "Game" is not a genre and is dropped).

    .venv/bin/python bench/music_data.py [--cache-dir DIR] [--excerpt-seconds 29] [--rebuild]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_CACHE = Path(os.environ.get("FOCALTAG_BENCH_MUSIC", Path.home() / ".cache" / "focaltag-bench" / "music"))
EXCERPT_RATE = 22050
EXCERPT_SECONDS = 29.0  # MagnaTagATune's clip length: exactly one chunk of the 29 s models (FCN, CRNN)
EXCERPT_POSITION = 0.3  # the excerpt starts this far into the track: past the intro, before the fade
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Track:
    """One recording found in a package, with what its source says about it."""

    source: Path  # the file in the extracted package (for Nexuiz: the file inside music.pk3, once unpacked)
    inner: str  # its path inside the package, as the manifest records it
    album: str
    title: str
    composer: str | None = None
    genres: tuple[str, ...] = ()


@dataclass(frozen=True)
class Package:
    """A Debian package that ships music, pinned by version, with the licence of its music."""

    name: str
    version: str
    game: str  # slug used in tags
    licence: str  # of the music, as the package's copyright file (or the music's own licence file) states it
    tracks: Callable[[Path], Iterator[Track]] = field(repr=False)
    several_albums: bool = False  # the game ships more than one album: album-* tags are added


# -- reading a package's tracks ----------------------------------------------------------------------------------
def _tags(path: Path) -> dict[str, list[str]]:
    import mutagen

    audio = mutagen.File(path)
    if audio is None or audio.tags is None:
        return {}
    out: dict[str, list[str]] = {}
    for key, value in audio.tags.items():
        out[str(key).lower()] = [str(v) for v in (value if isinstance(value, list) else [value])]
    return out


def _first(tags: dict[str, list[str]], key: str) -> str | None:
    values = [v.strip() for v in tags.get(key, []) if v.strip()]
    return values[0] if values else None


def _genres(tags: dict[str, list[str]]) -> tuple[str, ...]:
    return tuple(g for g in (v.strip() for v in tags.get("genre", [])) if g and g.lower() != "game")


def _title_of(path: Path) -> str:
    return path.stem.replace("_", " ").replace("-", " ").strip()


def _wesnoth(root: Path) -> Iterator[Track]:
    for path in sorted((root / "usr/share/games/wesnoth/1.16/data/core/music").glob("*.ogg")):
        tags = _tags(path)
        yield Track(path, str(path.relative_to(root)), _first(tags, "album") or "The Battle for Wesnoth OST",
                    _first(tags, "title") or _title_of(path), _first(tags, "composer") or _first(tags, "artist"),
                    _genres(tags))


def _warzone(root: Path) -> Iterator[Track]:
    """Warzone 2100 ships three albums, each with an ``album.json`` naming its tracks and their author."""
    albums = root / "usr/share/games/warzone2100/music/albums"
    for album_json in sorted(albums.glob("*/album.json")):
        album = json.loads(album_json.read_text(encoding="utf-8"))
        for entry in album["tracks"]:
            path = album_json.parent / entry["filename"]
            title = album["title"] if "warzone" in album["title"].lower() else f"Warzone 2100 {album['title']}"
            yield Track(path, str(path.relative_to(root)), title, entry["title"],
                        entry.get("author") or album.get("author"))


def _singularity(root: Path) -> Iterator[Track]:
    for path in sorted((root / "usr/share/games/singularity/music").rglob("*.ogg")):
        tags = _tags(path)
        # the copyright file: "Copyright (C) 2007-2008,2012 Max McCracken" (the ARTIST tag says "Maxstack")
        yield Track(path, str(path.relative_to(root)), _first(tags, "album") or "Endgame: Singularity",
                    _first(tags, "title") or _title_of(path), "Max McCracken", _genres(tags))


def _drascula(root: Path) -> Iterator[Track]:
    # audio/ holds the files; the language folders hold symbolic links to them
    for path in sorted((root / "usr/share/scummvm/drascula/audio").glob("*.ogg")):
        yield Track(path, str(path.relative_to(root)), "Drascula: The Vampire Strikes Back", _title_of(path))


# HyperRogue's hyperrogue-music.txt credits: "Crossroads, Graveyard, ... by Shawn Parrotte", "Caribbean, Ivory
# Tower, Ocean, Palace by Will Savino", "Hunting Grounds and Lost Mountain by Lincoln Domina"; the files are
# named after their composer (hr3-* are Parrotte's, tagged with his alias NeonCorridor).
_HYPERROGUE_COMPOSERS = {"hr3-": "Shawn Parrotte", "hr-savino-": "Will Savino", "hr-domina-": "Lincoln Domina"}


def _hyperrogue(root: Path) -> Iterator[Track]:
    for path in sorted((root / "usr/share/hyperrogue/music").glob("*.ogg")):
        tags = _tags(path)
        composer = next((c for prefix, c in _HYPERROGUE_COMPOSERS.items() if path.name.startswith(prefix)), None)
        titles = tags.get("title", [])
        yield Track(path, str(path.relative_to(root)), "HyperRogue", titles[-1] if titles else _title_of(path),
                    composer, _genres(tags))


# Nexuiz's ARTIST tags name the same people several ways; these are the spellings found in music.pk3.
_NEXUIZ_ARTISTS = {"gerd (elysis) raudenbusch": "elysis", "www.elysis.de": "elysis", "elysis": "elysis",
                   "braden walters": "Braden Walters", 'braden "meoblast001" walters': "Braden Walters",
                   "blkrbt": "blkrbt", "parapraxis": "Parapraxis"}


def _nexuiz(root: Path) -> Iterator[Track]:
    """The music sits in ``music.pk3`` (a zip): its ``sound/cdtracks/*.ogg`` are unpacked beside it once."""
    pk3 = root / "usr/share/games/nexuiz/data/music.pk3"
    out = root / "music.pk3.d"
    if not out.is_dir():
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with zipfile.ZipFile(pk3) as archive:
            for member in archive.namelist():
                if member.startswith("sound/cdtracks/") and member.endswith(".ogg"):
                    archive.extract(member, tmp)
        os.replace(tmp, out)
    for path in sorted((out / "sound/cdtracks").glob("*.ogg")):
        tags = _tags(path)
        artists = [_NEXUIZ_ARTISTS.get(a.strip().lower()) for a in tags.get("artist", [])]
        composer = next((a for a in artists if a), None)
        yield Track(path, f"usr/share/games/nexuiz/data/music.pk3:{path.relative_to(out)}", "Nexuiz",
                    _first(tags, "title") or _title_of(path), composer, _genres(tags))


def _planetblupi(root: Path) -> Iterator[Track]:
    for path in sorted((root / "usr/share/planetblupi/music").glob("*.ogg")):
        yield Track(path, str(path.relative_to(root)), "Planet Blupi", _title_of(path))


def _asc(root: Path) -> Iterator[Track]:
    # the copyright file: "Files: * Copyright: 2002 Michael Kievernagel"
    for path in sorted((root / "usr/share/games/asc/music").glob("*.mp3")):
        yield Track(path, str(path.relative_to(root)), "Advanced Strategic Command", _title_of(path),
                    "Michael Kievernagel")


def _fretsonfire(pack: str, album: str, composer: str) -> Callable[[Path], Iterator[Track]]:
    def tracks(root: Path) -> Iterator[Track]:
        for path in sorted((root / "usr/share/games/fretsonfire/data/songs" / pack).glob("*/song.ogg")):
            tags = _tags(path)
            yield Track(path, str(path.relative_to(root)), album, path.parent.name.replace("_", " "), composer,
                        _genres(tags))
    return tracks


PACKAGES: tuple[Package, ...] = (
    Package("wesnoth-1.16-music", "1:1.16.9-1", "wesnoth", "GPL-2+", _wesnoth),
    Package("warzone2100-music", "4.3.3-3", "warzone2100",
            "GPL-2+ (Debian copyright); the Legacy and Aftermath albums: CC-BY-SA-3.0+ or GPL-2+ (their "
            "license.txt)", _warzone, several_albums=True),
    Package("singularity-music", "007-2", "singularity", "CC-BY-SA-3.0", _singularity, several_albums=True),
    Package("drascula-music", "1.0+ds4-2", "drascula", "Drascula-License (BSD-like, DFSG-free)", _drascula),
    Package("hyperrogue-music", "12.0q-1", "hyperrogue",
            "GPL-2+ (Debian copyright); CC-BY-SA-3.0 (hyperrogue-music.txt)", _hyperrogue),
    Package("nexuiz-music", "2.5.2-12", "nexuiz", "GPL-2+", _nexuiz),
    Package("planetblupi-music-ogg", "1.14.2-3", "planetblupi", "GPL-3+", _planetblupi),
    Package("asc-music", "1.3-6", "asc", "GPL-2+", _asc),
    Package("fretsonfire-songs-muldjord", "2.dfsg-2.1", "fretsonfire",
            "CC-BY-SA-3.0", _fretsonfire("muldjord", "Muldjord (Frets on Fire song pack)", "Muldjord")),
    Package("fretsonfire-songs-sectoid", "1.dfsg-3.1", "fretsonfire", "Expat (MIT)",
            _fretsonfire("sectoid", "Sectoid (Frets on Fire song pack)", "Carlos Viola Iborra")),
)


# -- fetching ----------------------------------------------------------------------------------------------------
def _deb_name(pkg: Package) -> str:
    # apt-get download writes NAME_VERSION_ARCH.deb with the epoch's colon escaped as %3a
    return f"{pkg.name}_{pkg.version.replace(':', '%3a')}_all.deb"


def fetch(pkg: Package, debs: Path) -> Path:
    """The package's ``.deb``, downloaded once (``apt-get download NAME=VERSION``)."""
    path = debs / _deb_name(pkg)
    if path.is_file():
        return path
    debs.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["apt-get", "download", f"{pkg.name}={pkg.version}"], cwd=debs, capture_output=True,
                          text=True, check=False)
    if done.returncode != 0 or not path.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SystemExit(f"music_data: error: apt-get download {pkg.name}={pkg.version} failed ({tail[0]}); "
                         "run 'apt-get update' once, or check that Debian 12 still serves that version")
    return path


def extract(pkg: Package, deb: Path, extract_dir: Path) -> Path:
    """``dpkg-deb -x`` into ``extract/NAME`` once (a half-done extraction is redone)."""
    root = extract_dir / pkg.name
    if (root / ".complete").is_file():
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    (root / ".complete").write_text(pkg.version + "\n", encoding="utf-8")
    return root


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- labels --------------------------------------------------------------------------------------------------
def slug(text: str) -> str:
    """Lower-case ASCII words joined by ``-`` (a tag name that survives CSV, shells and file tags)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def track_tags(pkg: Package, track: Track) -> list[str]:
    tags = [f"game-{pkg.game}"]
    if pkg.several_albums:
        tags.append(f"album-{slug(track.album)}")
    if track.composer:
        tags.append(f"composer-{slug(track.composer)}")
    tags.extend(f"genre-{slug(g)}" for g in track.genres)
    return list(dict.fromkeys(tags))


def excerpt_window(duration: float, seconds: float, position: float = EXCERPT_POSITION) -> tuple[float, float]:
    """Start and length (s) of a track's excerpt: ``position`` of the way in, ending by the track's end."""
    start = min(max(0.0, duration * position), max(0.0, duration - seconds))
    return start, min(seconds, duration)


def _write_excerpt(source: Path, target: Path, seconds: float) -> tuple[float, float]:
    import numpy as np
    import soundfile as sf

    from focaltag.audio.decode import load_audio

    wave = load_audio(source, sr=EXCERPT_RATE)
    duration = len(wave) / EXCERPT_RATE
    start, length = excerpt_window(duration, seconds)
    i0 = int(round(start * EXCERPT_RATE))
    clip = np.clip(wave[i0:i0 + int(round(length * EXCERPT_RATE))], -1.0, 1.0)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.stem + ".tmp.flac")
    sf.write(tmp, clip, EXCERPT_RATE, subtype="PCM_16", format="FLAC")
    os.replace(tmp, target)
    return duration, start


def _duration(path: Path) -> float:
    import mutagen

    audio = mutagen.File(path)
    return float(audio.info.length) if audio is not None else 0.0


def build(cache: Path, *, seconds: float = EXCERPT_SECONDS, rebuild: bool = False) -> dict[str, Any]:
    """Fetch, extract and cut every package's tracks; write ``manifest.json`` and ``labels.csv``."""
    entries: list[dict[str, Any]] = []
    seen: dict[str, str] = {}
    skipped: list[dict[str, str]] = []
    packages: list[dict[str, Any]] = []
    for pkg in PACKAGES:
        deb = fetch(pkg, cache / "debs")
        root = extract(pkg, deb, cache / "extract")
        packages.append({"name": pkg.name, "version": pkg.version, "licence": pkg.licence,
                         "deb_sha256": sha256(deb)})
        for track in pkg.tracks(root):
            digest = sha256(track.source)
            if digest in seen:
                skipped.append({"file": track.inner, "why": f"the same bytes as {seen[digest]}"})
                continue
            seen[digest] = track.inner
            duration = _duration(track.source)
            if duration < seconds:
                skipped.append({"file": track.inner, "why": f"{duration:.1f} s, shorter than the excerpt"})
                continue
            rel = Path("excerpts") / slug(track.album) / f"{slug(pkg.name)}--{slug(track.source.stem)}.flac"
            if track.source.name == "song.ogg":  # Frets on Fire: the song's folder names it
                rel = rel.with_name(f"{slug(pkg.name)}--{slug(track.source.parent.name)}.flac")
            target = cache / rel
            if rebuild or not target.is_file():
                duration, start = _write_excerpt(track.source, target, seconds)
            else:
                start, _ = excerpt_window(duration, seconds)
            entries.append({
                "path": str(rel), "album": track.album, "game": pkg.game, "title": track.title,
                "composer": track.composer, "tags": track_tags(pkg, track), "licence": pkg.licence,
                "package": pkg.name, "version": pkg.version, "source_file": track.inner,
                "source_sha256": digest, "duration_s": round(duration, 2), "excerpt_start_s": round(start, 2),
                "excerpt_s": seconds,
            })
    manifest = {"version": MANIFEST_VERSION, "excerpt_rate": EXCERPT_RATE, "excerpt_s": seconds,
                "packages": packages, "tracks": entries, "skipped": skipped}
    _write_json(cache / "manifest.json", manifest)
    _write_labels(cache / "labels.csv", entries)
    return manifest


def _write_json(path: Path, doc: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _write_labels(path: Path, entries: list[dict[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "tags"])
        for e in entries:
            writer.writerow([e["path"], ";".join(e["tags"])])
    os.replace(tmp, path)


# -- for the benchmarks ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MusicSet:
    """The built set as the benchmarks read it: absolute paths, album labels and tag lists, in manifest order."""

    root: Path
    paths: tuple[Path, ...]
    albums: tuple[str, ...]
    tags: tuple[tuple[str, ...], ...]
    manifest: dict[str, Any]

    def __len__(self) -> int:
        return len(self.paths)


def spread_subset(albums: list[str], max_per_album: int | None) -> list[int]:
    """Indices (in manifest order) of at most ``max_per_album`` tracks of each album, evenly spaced over the
    album's tracks in manifest order (so a smaller set still spans each album); None keeps every track."""
    if max_per_album is None:
        return list(range(len(albums)))
    if max_per_album < 1:
        raise ValueError(f"max_per_album must be >= 1, got {max_per_album}")
    members: dict[str, list[int]] = {}
    for i, album in enumerate(albums):
        members.setdefault(album, []).append(i)
    keep: list[int] = []
    for rows in members.values():
        if len(rows) <= max_per_album:
            keep.extend(rows)
        else:
            picks = np.linspace(0, len(rows) - 1, max_per_album).round().astype(int)
            keep.extend(rows[j] for j in picks)
    return sorted(keep)


def load_set(cache: Path = DEFAULT_CACHE, *, max_per_album: int | None = None) -> MusicSet:
    """Read ``manifest.json`` (the tracks of :func:`spread_subset`); a missing one says how to build it."""
    manifest_path = Path(cache) / "manifest.json"
    if not manifest_path.is_file():
        raise SystemExit(f"{manifest_path} is missing: build the set first with "
                         f"'python bench/music_data.py --cache-dir {cache}'")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    keep = spread_subset([t["album"] for t in manifest["tracks"]], max_per_album)
    manifest = {**manifest, "tracks": [manifest["tracks"][i] for i in keep], "max_per_album": max_per_album}
    tracks = manifest["tracks"]
    missing = [t["path"] for t in tracks if not (Path(cache) / t["path"]).is_file()]
    if missing:
        raise SystemExit(f"{len(missing)} excerpt(s) of {manifest_path} are missing (first: {missing[0]}); "
                         "rebuild with 'python bench/music_data.py'")
    return MusicSet(Path(cache), tuple(Path(cache) / t["path"] for t in tracks), tuple(t["album"] for t in tracks),
                    tuple(tuple(t["tags"]) for t in tracks), manifest)


def describe(manifest: dict[str, Any]) -> dict[str, Any]:
    """Counts per album and per tag (what the README's data paragraph states)."""
    tracks = manifest["tracks"]
    return {"tracks": len(tracks), "albums": dict(Counter(t["album"] for t in tracks).most_common()),
            "tags": dict(Counter(tag for t in tracks for tag in t["tags"]).most_common()),
            "skipped": len(manifest["skipped"]),
            "packages": [f"{p['name']} {p['version']} ({p['licence']})" for p in manifest["packages"]]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help="where the .deb files, their contents and the excerpts go (outside the repository)")
    parser.add_argument("--excerpt-seconds", type=float, default=EXCERPT_SECONDS)
    parser.add_argument("--rebuild", action="store_true", help="cut every excerpt again")
    args = parser.parse_args(argv)
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise SystemExit("music_data: error: needs apt-get and dpkg-deb (a Debian or Ubuntu machine)")
    manifest = build(args.cache_dir.expanduser(), seconds=args.excerpt_seconds, rebuild=args.rebuild)
    json.dump(describe(manifest), sys.stdout, indent=1, ensure_ascii=False)
    print(f"\nmanifest: {args.cache_dir / 'manifest.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
