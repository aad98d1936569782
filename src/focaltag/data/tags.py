"""The MTG-Jamendo mood/theme tag set (56 tags of the official split-0) and its real training-count profile.

Counts are split-0 training-track counts from the official MTG-Jamendo metadata (CC BY-NC-SA 4.0); they are
used only to give the synthetic demo dataset the real long-tailed shape (imbalance factor 15.7).
"""

from __future__ import annotations

MOODTHEME_PREFIX = "mood/theme---"

# MTG-Jamendo's four tag sets (file names autotagging_<tagset>-*.tsv); kept here, free of heavy imports, so the
# command-line parsers can offer them as choices cheaply (focaltag.data.dataset uses them)
TAGSETS: tuple[str, ...] = ("moodtheme", "genre", "instrument", "top50tags")

# tag -> number of split-0 training tracks carrying it (source: MTG-Jamendo split-0 train TSV)
MOODTHEME_TRAIN_COUNTS: dict[str, int] = {
    "action": 296, "adventure": 264, "advertising": 363, "background": 404, "ballad": 193, "calm": 267,
    "children": 152, "christmas": 368, "commercial": 191, "cool": 170, "corporate": 349, "dark": 620,
    "deep": 429, "documentary": 339, "drama": 253, "dramatic": 195, "dream": 498, "emotional": 499,
    "energetic": 857, "epic": 601, "fast": 62, "film": 746, "fun": 220, "funny": 109, "game": 169,
    "groovy": 78, "happy": 927, "heavy": 98, "holiday": 98, "hopeful": 137, "inspiring": 561, "love": 493,
    "meditative": 374, "melancholic": 228, "melodic": 598, "motivational": 372, "movie": 207, "nature": 137,
    "party": 127, "positive": 376, "powerful": 106, "relaxing": 763, "retro": 139, "romantic": 363,
    "sad": 375, "sexy": 59, "slow": 295, "soft": 208, "soundscape": 415, "space": 362, "sport": 201,
    "summer": 261, "trailer": 159, "travel": 89, "upbeat": 216, "uplifting": 449,
}

MOODTHEME_TAGS: tuple[str, ...] = tuple(MOODTHEME_PREFIX + t for t in sorted(MOODTHEME_TRAIN_COUNTS))


def default_tag_names(n_tags: int) -> tuple[str, ...]:
    """Names for ``n_tags`` columns that came without any: the 56 mood/theme tags when there are 56, else
    ``tag_000``, ``tag_001``, ... One rule for a model's outputs and an evaluated matrix's columns, so the names
    a model writes are the names evaluation reads."""
    if n_tags == len(MOODTHEME_TAGS):
        return MOODTHEME_TAGS
    return tuple(f"tag_{j:03d}" for j in range(n_tags))


def short_tag(name: str) -> str:
    """``mood/theme---happy`` -> ``happy`` (names without a category prefix are returned unchanged)."""
    return name.split("---", 1)[1] if "---" in name else name


def full_tag(name: str, prefix: str = MOODTHEME_PREFIX) -> str:
    """``happy`` -> ``mood/theme---happy``; already-prefixed names are returned unchanged."""
    return name if "---" in name else prefix + name
