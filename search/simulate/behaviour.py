"""Users' behaviour on a result page: a position-based click model (examination falls with
position; attractiveness from the hidden grade, title/thumbnail quality, freshness/trends
and personal taste), play time from relevance, quality and duration (valid plays), and rarer
likes, shares and follows."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from search.serve_log import is_valid_play

from .population import User


@dataclass
class Outcome:
    clicked: bool
    play_time_s: float
    valid_play: bool
    liked: bool
    shared: bool
    followed: bool


class ClickModel:
    def __init__(self, cfg: dict[str, Any]):
        self.cm = cfg["click_model"]
        self.play = cfg["play"]
        self.out = cfg["outcomes"]

    def examination(self, position: int) -> float:
        return float(position) ** (-float(self.cm["examination_eta"]))

    def attractiveness(self, grade: int, video: dict[str, Any], truth: dict[str, Any], user: User, day_ts: float) -> float:
        cm = self.cm
        a = float(cm["attract_by_grade"][grade])
        q = float(truth.get("quality", 0.6))
        a *= 1.0 + user.quality_sensitivity * (q - 0.6)
        people = set(truth.get("performers", [])) | set(truth.get("original_artists", []))
        if people & set(user.favourite_artists):
            a *= float(cm["favourite_artist_boost"])
        if video.get("category") in user.categories:
            a *= float(cm["category_boost"])
        if video.get("language") not in user.languages and video.get("language") not in ("other", "instrumental"):
            a *= float(cm["language_mismatch"])
        if int(video.get("resolution", 0)) < 720:
            a *= float(cm["low_resolution"])
        if truth.get("trending"):
            age_days = (day_ts - float(video.get("_publish_ts", 0))) / 86400
            if 0 <= age_days <= float(cm["trending_days"]):
                a *= float(cm["trending_boost"])
        return max(0.0, min(float(cm["max_attract"]), a))

    def outcome(self, position: int, grade: int, video: dict[str, Any], truth: dict[str, Any], user: User, day_ts: float,
                rng: random.Random) -> Outcome:
        p = self.examination(position) * self.attractiveness(grade, video, truth, user, day_ts)
        if rng.random() >= p:
            return Outcome(False, 0.0, False, False, False, False)
        dur = float(video.get("duration_s") or 180)
        # Many clicks bounce within seconds (wrong video, bad first frames); fewer on good results.
        if rng.random() < float(self.play["bounce_by_grade"][grade]) * (1.4 - 0.8 * float(truth.get("quality", 0.6))):
            play = round(min(dur, rng.uniform(1.0, 20.0)), 1)
            valid = is_valid_play(play, dur, float(self.play["valid_play_min_s"]), float(self.play["valid_play_frac"]))
            return Outcome(True, play, valid, False, False, False)
        mean = float(self.play["mean_by_grade"][grade]) * (0.7 + 0.6 * float(truth.get("quality", 0.6)))
        mean = min(0.97, max(0.02, mean))
        k = float(self.play["concentration"])
        frac = rng.betavariate(mean * k, (1 - mean) * k)
        play = round(frac * dur, 1)
        valid = is_valid_play(play, dur, float(self.play["valid_play_min_s"]), float(self.play["valid_play_frac"]))
        liked = valid and rng.random() < float(self.out["like"]) * (1.5 if grade >= 2 else 0.3) * float(truth.get("quality", 0.6)) * 1.6
        shared = valid and rng.random() < float(self.out["share"]) * (1.0 if grade >= 2 else 0.2)
        followed = valid and rng.random() < float(self.out["follow"]) * (2.0 if set(truth.get("performers", [])) & set(user.favourite_artists) else 1.0)
        return Outcome(True, play, valid, liked, shared, followed)
