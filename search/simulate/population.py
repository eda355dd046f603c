"""Simulated users: tastes (favourite artists, languages, categories, quality sensitivity)
and activity (heavy, medium, light users; new users who join during the span with no
history). Seeded and deterministic."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

CATEGORIES = ["mv", "live", "cover", "dance", "tutorial", "reaction", "variety", "fan_edit", "lyric", "other"]


@dataclass
class User:
    user_id: str
    activity: str                     # heavy | medium | light
    daily_prob: float                 # chance of searching on a given day
    sessions_per_day: float
    join_day: int                     # 0 for existing users
    favourite_artists: list[str] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    quality_sensitivity: float = 1.0  # how much hidden quality moves their clicks

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


ACTIVITY = {"heavy": (0.10, 0.55, 2.5), "medium": (0.30, 0.20, 1.5), "light": (0.60, 0.04, 1.0)}


def make_population(n: int, artists_by_popularity: list[tuple[str, str]], days: int, rng: random.Random,
                    new_user_share: float = 0.2) -> list[User]:
    """`artists_by_popularity`: (name, language) pairs, most popular first."""
    weights = [1.0 / (r + 3) ** 0.9 for r in range(len(artists_by_popularity))]
    users: list[User] = []
    for i in range(n):
        r = rng.random()
        activity = "heavy" if r < ACTIVITY["heavy"][0] else ("medium" if r < ACTIVITY["heavy"][0] + ACTIVITY["medium"][0] else "light")
        _, p, spd = ACTIVITY[activity]
        fav = []
        for _ in range(rng.randint(1, 5)):
            a = rng.choices(artists_by_popularity, weights=weights)[0]
            if a[0] not in fav:
                fav.append(a[0])
        langs = sorted({lang for name, lang in artists_by_popularity if name in fav} | ({"zh"} if rng.random() < 0.8 else set()))
        cats = rng.sample(CATEGORIES[:9], k=rng.randint(1, 3))
        join = rng.randint(1, max(1, days - 1)) if rng.random() < new_user_share else 0
        users.append(User(f"u{i:06d}", activity, p, spd, join, fav, langs, cats, round(rng.uniform(0.3, 2.0), 2)))
    return users
