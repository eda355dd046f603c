"""Demo video catalog generated from the real knowledge base.

Videos are what a music app's video tab holds: official MVs, live clips, UGC covers, dance
covers, tutorials, reactions, variety-show stages, fan edits, lyric videos and mixes, with
platform-style Chinese titles, power-law popularity, publish dates over years, and the
traps the reference article names (songs sharing a title; titles containing a song name
but unrelated; user uploads with empty metadata). Seeded and deterministic.

    mvsearch catalog demo --out var/demo/docs.jsonl [--size 20000] [--seed 7]
"""
from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import math
import os
import random
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from .kb import KnowledgeBase, business_dictionary, load_kb, write_dictionary

TZ = timezone(timedelta(hours=8))
REFERENCE_TIME = datetime(2026, 11, 1, 12, 0, tzinfo=TZ)  # newest possible publish time
EARLIEST = datetime(2012, 1, 1, tzinfo=TZ)

CATEGORY_MIX = {"mv": 0.09, "live": 0.14, "cover": 0.21, "dance": 0.08, "tutorial": 0.07, "reaction": 0.05,
                "variety": 0.09, "fan_edit": 0.08, "lyric": 0.09, "other": 0.10}
DURATION = {"mv": (170, 320), "live": (180, 480), "cover": (90, 320), "dance": (50, 260), "tutorial": (240, 1500),
            "reaction": (240, 1000), "variety": (180, 600), "fan_edit": (40, 260), "lyric": (170, 320), "other": (30, 3600)}
RESOLUTION = {"mv": [1080, 1080, 2160, 720], "live": [720, 1080, 1080, 480], "cover": [480, 720, 720, 1080],
              "dance": [720, 1080, 1080], "tutorial": [720, 1080], "reaction": [720, 1080], "variety": [720, 1080, 1080],
              "fan_edit": [720, 1080, 480], "lyric": [720, 1080], "other": [360, 480, 720, 1080]}
POPULARITY = {"mv": 3.0, "live": 1.6, "cover": 0.6, "dance": 1.0, "tutorial": 0.5, "reaction": 0.7, "variety": 1.8,
              "fan_edit": 0.8, "lyric": 1.0, "other": 0.5}

_NICK_HEAD = ["小", "阿", "大", "老", "是", "一只", "会唱歌的", "爱吃鱼的", "不正经的", "深夜", "温柔的", "快乐", "迷路的", "认真的"]
_NICK_BODY = ["乐", "鱼", "猫", "兔", "木", "森", "夏", "柚子", "橙子", "星", "糖", "九", "七", "安", "北", "南", "鹿", "羊", "熊", "桃", "栗子", "豆", "风", "雨", "酱"]
_NICK_TAIL = ["", "", "哥", "姐", "酱", "君", "Music", "的音乐日记", "弹唱", "_official", "不吃香菜", "在唱歌", "同学", "Studio", "吉他", "钢琴", "2000", "1997"]
_DANCE_TEAMS = ["Lady Bees", "1MILLION", "Urban Dance Camp", "HYPE舞团", "星耀舞社", "STUDIO TDM", "南京舞蹈工作室", "KPOP翻跳社"]
_LIVE_EVENTS = ["演唱会", "巡回演唱会", "音乐节", "跨年晚会", "颁奖典礼", "粉丝见面会", "音乐会"]
_CITIES = ["北京", "上海", "广州", "深圳", "成都", "杭州", "台北", "香港", "武汉", "南京", "重庆", "西安", "新加坡", "吉隆坡"]
_INSTRUMENTS = ["吉他", "钢琴", "尤克里里", "架子鼓", "小提琴", "古筝", "口琴"]
_EDIT_SOURCES = ["动漫", "原神", "王者荣耀", "英雄联盟", "电影", "甄嬛传", "哈利波特", "火影忍者", "海贼王", "冰菓", "进击的巨人", "宫崎骏"]
_VLOG = ["vlog", "日常", "旅行", "探店", "毕业季", "周末", "露营", "开箱"]
_MOOD_WORDS = {"运动": ["跑步", "健身", "燃脂", "运动"], "学习": ["学习", "专注", "自习"], "治愈": ["治愈", "温柔", "放松"],
               "伤感": ["伤感", "emo", "失恋"], "驾车": ["开车", "自驾", "公路"], "夜晚": ["深夜", "睡前", "夜晚"],
               "兴奋": ["燃", "嗨", "蹦迪"], "浪漫": ["浪漫", "告白", "婚礼"], "快乐": ["快乐", "开心", "元气"],
               "放松": ["放松", "慵懒", "下午茶"], "怀旧": ["怀旧", "经典老歌", "回忆杀"], "安静": ["安静", "轻音乐", "纯音乐"]}


_ROLE = {"mv": "official", "live": "live", "cover": "cover", "dance": "dance", "tutorial": "tutorial",
         "reaction": "reaction", "variety": "variety", "fan_edit": "fan_edit", "lyric": "lyric"}


def _truth(role: str, performers: list[str], song: str, original_artists: list[str], show: str, moods: list[str],
           **extra: Any) -> dict[str, Any]:
    return {"role": role, "performers": performers, "song": song, "original_artists": list(original_artists),
            "show": show, "moods": list(moods), **extra}


def _zipf_sampler(weights: list[float], rng: random.Random) -> Callable[[], int]:
    cum = list(itertools.accumulate(weights))
    total = cum[-1]
    return lambda: min(bisect.bisect_left(cum, rng.random() * total), len(cum) - 1)


class CatalogGenerator:
    def __init__(self, kb: KnowledgeBase, seed: int = 7):
        self.kb = kb
        self.seed = seed
        self.rng = random.Random(seed)
        rng = self.rng
        self.songs_by_artist = {a: sorted(ss, key=lambda s: -s["popularity"]) for a, ss in kb.songs_by_artist.items()}
        self.artists = [a for a in kb.artists if self.songs_by_artist.get(a["name"])]
        self.artists.sort(key=lambda a: (-a["popularity"], a["name"]))
        # Zipf over artist popularity rank: a few artists own most videos, as on real platforms.
        # Two tiers, as on a real platform: the few hundred artists users search most (the
        # curated list, in its order) get most uploads; the long tail of the KB gets the rest,
        # local-language artists more than foreign ones.
        self.head = sorted((a for a in self.artists if "curated_rank" in a), key=lambda a: a["curated_rank"])
        self.tail = [a for a in self.artists if "curated_rank" not in a]
        self.pick_head = _zipf_sampler([1.0 / (r + 5) ** 0.9 for r in range(len(self.head))], rng) if self.head else None
        self.pick_tail = _zipf_sampler([(1.0 if a.get("language") in ("zh", "yue") else 0.5) / (r + 8) ** 1.1
                                        for r, a in enumerate(self.tail)], rng)
        # Songs sharing a title across artists (the article's 会不会 case) get their own share.
        by_title: dict[str, set[str]] = {}
        for s in kb.songs:
            by_title.setdefault(s["title"], set()).update(s["artists"])
        head_names = {a["name"] for a in self.head}
        self.shared_title_songs = [s for s in kb.songs if len(by_title[s["title"]]) >= 2 and len(s["title"]) >= 2
                                   and (set(s["artists"]) & head_names or "curated" in s.get("sources", []))
                                   and all(n in kb.artist_by_name for n in s["artists"])]
        self.article_songs = [s for s in self.shared_title_songs if "curated" in s.get("sources", [])
                              and not set(s["artists"]) & head_names]
        self.uploaders = sorted({h + b + t for h in _NICK_HEAD for b in _NICK_BODY for t in _NICK_TAIL})
        rng.shuffle(self.uploaders)
        self.uploaders = ["小乐哥"] + self.uploaders[:4000]
        self.pick_uploader = _zipf_sampler([1.0 / (r + 3) ** 0.9 for r in range(len(self.uploaders))], rng)
        self.mood_songs: dict[str, list[dict[str, Any]]] = {}
        for s in kb.songs:
            for m in s.get("moods", []):
                self.mood_songs.setdefault(m, []).append(s)
        self.lyrics_by_song = {}
        for ly in kb.lyrics:
            self.lyrics_by_song.setdefault((ly["song"], ly["artist"]), []).append(ly["line"])
        self.performers = [(sh, p) for sh in kb.shows for p in sh.get("performers", [])]
        self.short_titles = sorted({s["title"] for s in kb.songs[:3000] if 2 <= len(s["title"]) <= 4 and all("\u4e00" <= c <= "\u9fff" for c in s["title"])})
        self.categories = list(CATEGORY_MIX)
        self.pick_category = _zipf_sampler([CATEGORY_MIX[c] for c in self.categories], rng)

    # -- pieces ---------------------------------------------------------------------------
    def _artist_song(self) -> tuple[dict[str, Any], dict[str, Any]]:
        r = self.rng.random()
        if r < 0.006 and self.article_songs:  # the reference article's own examples (会不会 …)
            s = self.rng.choice(self.article_songs)
            return self.kb.artist_by_name[s["artists"][0]], s
        if r < 0.036 and self.shared_title_songs:
            s = self.rng.choice(self.shared_title_songs)
            return self.kb.artist_by_name[s["artists"][0]], s
        a = self.head[self.pick_head()] if self.pick_head and r < 0.65 else self.tail[self.pick_tail()]
        ss = self.songs_by_artist[a["name"]]
        # Videos cluster on an artist's best-known songs (晴天, 七里香 …), then a long tail.
        sig = [s for s in ss if s["title"] in set(a.get("signature_songs", []))]
        if sig and self.rng.random() < 0.6:
            return a, self.rng.choice(sig)
        i = min(int(self.rng.paretovariate(1.2)) - 1, len(ss) - 1)
        return a, ss[i]

    def _publish(self, recent_bias: float = 0.0) -> datetime:
        span = (REFERENCE_TIME - EARLIEST).total_seconds()
        u = self.rng.random() ** (1.0 + recent_bias)  # skew toward recent uploads
        return REFERENCE_TIME - timedelta(seconds=u * span)

    def _name(self, a: dict[str, Any]) -> str:
        """How an uploader writes the artist: usually the name, sometimes an English name or alias."""
        r = self.rng.random()
        if r < 0.12 and a.get("english"):
            return self.rng.choice(a["english"])
        if r < 0.16 and a.get("aliases"):
            return self.rng.choice(a["aliases"])
        return a["name"]

    # -- categories -----------------------------------------------------------------------
    def _video(self, n: int) -> dict[str, Any]:
        rng = self.rng
        cat = self.categories[self.pick_category()]
        a, s = self._artist_song()
        name, song = self._name(a), s["title"]
        year = rng.randint(2005, 2026)
        artists, songs = [a["name"]], [song]
        tags = [a["name"], song]
        line = ""
        uploader = self.uploaders[self.pick_uploader()]
        desc = ""
        if cat == "mv":
            uploader = rng.choice([f"{a['name']}官方频道", f"{a['name']}工作室", f"{a['name']}"])
            title = rng.choice([f"{name}《{song}》官方MV", f"【{name}】{song} MV", f"{name} - {song} (Official Music Video)",
                                f"{name}《{song}》MV 高清版", f"{song} - {name} 官方完整版MV"])
            desc = f"{a['name']}演唱的《{song}》官方MV。" + (f"收录于专辑。" if rng.random() < 0.3 else "")
            tags += ["MV", "官方"]
        elif cat == "live":
            ev = rng.choice(_LIVE_EVENTS)
            city = rng.choice(_CITIES)
            title = rng.choice([f"【{name}】{song} {year}{ev} live", f"{name}《{song}》{city}{ev}现场", f"{name} {song} live 饭拍 {year}",
                                f"{year}{name}{city}{ev}《{song}》超清现场", f"现场版｜{name} - {song}"])
            desc = f"{year}年{city}{ev}，{a['name']}现场演唱《{song}》。"
            tags += ["现场", "live"]
        elif cat == "cover":
            inst = rng.choice(_INSTRUMENTS)
            title = rng.choice([f"{song} 翻唱 | {uploader}", f"【翻唱】{song}（cover {name}）", f"{inst}弹唱《{song}》", f"{song} cover {name}",
                                f"超好听的女声版《{song}》", f"翻唱{name}的{song}，你们觉得怎么样", f"{song} - {uploader} 翻唱"])
            desc = f"原唱：{a['name']}。{uploader}翻唱。"
            artists = []
            tags += ["翻唱", "cover", inst]
        elif cat == "dance":
            team = rng.choice(_DANCE_TEAMS + [uploader])
            title = rng.choice([f"【舞蹈翻跳】{song} - {name}", f"{song} 舞蹈教学+翻跳 {team}", f"{team}｜{name}《{song}》dance cover",
                                f"{name} {song} 直拍", f"宅舞 {song} 翻跳"])
            desc = f"{team}翻跳{a['name']}的《{song}》。"
            artists = [] if "直拍" not in title else artists
            tags += ["舞蹈", "翻跳", "dance"]
        elif cat == "tutorial":
            inst = rng.choice(_INSTRUMENTS + ["唱歌", "声乐"])
            title = rng.choice([f"《{song}》{inst}教学 零基础", f"{inst}教程 | {name} - {song}", f"{song} {inst}谱 教学 附谱",
                                f"三分钟学会{song}（{inst}）"])
            desc = f"{a['name']}《{song}》{inst}教学，谱子见评论区。"
            artists = []
            tags += ["教学", inst]
        elif cat == "reaction":
            title = rng.choice([f"外国人第一次听{name}《{song}》reaction", f"声乐老师点评{name}《{song}》", f"【reaction】{name} {song} 现场反应",
                                f"日本音乐人听{name}的{song}"])
            desc = f"听{a['name']}的《{song}》的反应。"
            artists = []
            tags += ["reaction", "反应"]
        elif cat == "variety" and self.performers:
            sh, p = rng.choice(self.performers)
            pa = self.kb.artist_by_name.get(p)
            pss = self.songs_by_artist.get(p)
            if pss:
                song = rng.choice(pss[:8])["title"]
            title = rng.choice([f"【{sh['name']}】{p}《{song}》纯享版", f"{p}在{sh['name']}演唱{song}", f"{sh['name']} {p} - {song} 舞台",
                                f"{sh['name']}第{rng.randint(1, 12)}期 {p}《{song}》"])
            desc = f"{sh['name']}节目中{p}演唱《{song}》。"
            artists, songs, tags = [p], [song], [p, song, sh["name"], "综艺", "纯享"]
            a = pa or a
            years = [int(y) for y in sh.get("years", []) if str(y).isdigit()]
            if years:  # a stage is published when the show aired
                y = rng.choice(years)
                v = self._finish(n, cat, title, desc, tags, artists, songs, uploader, a)
                v["publish_time"] = datetime(y, rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23), tzinfo=TZ).isoformat(timespec="seconds")
                v["_truth"] = _truth("variety", [p], song, s["artists"] if s["title"] == song else [p], sh["name"], s.get("moods", []))
                return v
            v = self._finish(n, cat, title, desc, tags, artists, songs, uploader, a)
            v["_truth"] = _truth("variety", [p], song, s["artists"] if s["title"] == song else [p], sh["name"], s.get("moods", []))
            return v
        elif cat == "fan_edit":
            src = rng.choice(_EDIT_SOURCES)
            title = rng.choice([f"【{name}】混剪 | {song} 踩点", f"{src}混剪 BGM：{song}", f"【{src}】{song} 燃向剪辑", f"{name}高甜混剪 {song}"])
            desc = f"BGM：{a['name']} - {song}"
            if "BGM" in title or src in title:
                artists = []
            tags += ["混剪", src]
        elif cat == "lyric":
            lines = self.lyrics_by_song.get((song, a["name"]))
            line = f"「{rng.choice(lines)}」" if lines else ""
            title = rng.choice([f"{name} - {song} (动态歌词/Lyrics)", f"【歌词版】{song} - {name} {line}", f"{song}（歌词）{name} {line}".strip()])
            desc = f"{a['name']}《{song}》动态歌词。{line}"
            tags += ["歌词", "动态歌词"]
        else:
            return self._other(n)
        v = self._finish(n, cat, title, desc, tags, artists, songs, uploader, a)
        # What the video really is, kept apart from its (possibly empty) metadata.
        performer = [a["name"]] if cat in ("mv", "live", "lyric", "fan_edit") else [uploader]
        v["_truth"] = _truth(_ROLE[cat], performer, song, s["artists"], "", s.get("moods", []),
                             line=line.strip("「」") if cat == "lyric" else "")
        # User uploads often come with no structured metadata at all.
        if cat in ("cover", "live", "fan_edit", "dance", "lyric") and rng.random() < 0.18:
            v["artists"], v["songs"] = [], []
        return v

    def _other(self, n: int) -> dict[str, Any]:
        rng = self.rng
        r = rng.random()
        if r < 0.45 and self.short_titles:
            # Trap: a title containing a song name, about something else entirely.
            t = rng.choice(self.short_titles)
            src = rng.choice(_EDIT_SOURCES + _VLOG)
            title = rng.choice([f"[{src}][{t}]动漫剪辑", f"{src} | {t}", f"今天是{t}的一天 {src}", f"【{src}】{t}篇", f"{t}（{src}第{rng.randint(1, 30)}集）"])
            v = self._finish(n, "other", title, f"{src}相关视频。", [src], [], [], self.uploaders[self.pick_uploader()], None)
            v["_truth"] = _truth("unrelated", [], "", [], "", [], topic=src)
            return v
        if r < 0.85 and self.mood_songs:
            mood = rng.choice(sorted(self.mood_songs))
            words = _MOOD_WORDS.get(mood, [mood])
            picks = rng.sample(self.mood_songs[mood], k=min(4, len(self.mood_songs[mood])))
            w = rng.choice(words)
            title = rng.choice([f"{w}必备 | {mood}歌单 {rng.randint(10, 50)}首", f"适合{w}听的歌 合集", f"【{w}BGM】一小时{mood}歌曲串烧", f"{w}时听的{rng.randint(5, 30)}首歌"])
            desc = "歌单：" + "、".join(f"{p['artists'][0]}《{p['title']}》" for p in picks)
            arts = list(dict.fromkeys(p["artists"][0] for p in picks))
            v = self._finish(n, "other", title, desc, [mood, w, "歌单", "合集"], arts, [p["title"] for p in picks],
                             self.uploaders[self.pick_uploader()], None)
            v["_truth"] = _truth("mix", arts, "", [], "", [mood], topic=w, mix_songs=[p["title"] for p in picks])
            return v
        src = rng.choice(_VLOG)
        title = f"{src} | {rng.choice(_CITIES)}{rng.choice(['', '随手拍', '记录', '之旅'])}"
        v = self._finish(n, "other", title, "生活记录", [src], [], [], self.uploaders[self.pick_uploader()], None)
        v["_truth"] = _truth("vlog", [], "", [], "", [], topic=src)
        return v

    def _finish(self, n, cat, title, desc, tags, artists, songs, uploader, a) -> dict[str, Any]:
        rng = self.rng
        lo, hi = DURATION[cat]
        published = self._publish(recent_bias=0.6 if cat in ("dance", "reaction", "fan_edit") else 0.0)
        age_days = max(1.0, (REFERENCE_TIME - published).total_seconds() / 86400)
        artist_pop = (a or {}).get("popularity", 3.0)
        # Log-normal quality × artist popularity × category; older videos accumulated more plays,
        # and a few recent ones are trending (the article's viral-cover case).
        log_plays = rng.gauss(6.0, 1.6) + 0.25 * artist_pop + math.log(POPULARITY[cat]) + 0.35 * math.log1p(age_days / 30)
        trending = age_days < 30 and rng.random() < 0.08
        if trending:
            log_plays += rng.uniform(2.0, 4.0)
            tags = tags + ["热门"]
        plays = int(min(5e8, math.exp(log_plays)))
        like_rate = rng.betavariate(2, 60)
        lang = "other"
        if a:
            lang = a.get("language") or "zh"
            lang = lang if lang in ("zh", "en", "ja", "ko", "yue") else "other"
        if cat == "tutorial" and any(i in title for i in ("钢琴", "吉他", "古筝", "小提琴")):
            lang = "instrumental"
        self._last_trending = trending
        return {
            "video_id": f"v{n:07d}",
            "title": title,
            "description": desc,
            "tags": list(dict.fromkeys(t for t in tags if t)),
            "artists": artists,
            "songs": songs,
            "uploader": uploader,
            "category": cat,
            "language": lang,
            "duration_s": rng.randint(lo, hi),
            "resolution": rng.choice(RESOLUTION[cat]),
            "publish_time": published.isoformat(timespec="seconds"),
            "play_count": plays,
            "like_count": int(plays * like_rate),
            "comment_count": int(plays * like_rate * rng.uniform(0.03, 0.2)),
            "share_count": int(plays * like_rate * rng.uniform(0.02, 0.15)),
        }

    def generate(self, size: int) -> Iterator[dict[str, Any]]:
        """Videos with a hidden `_truth` entry (what the video really is) that writers strip
        from the public catalog and keep in the truth file."""
        for n in range(size):
            v = self._video(n)
            t = v.setdefault("_truth", _truth("unrelated", [], "", [], "", []))
            t["video_id"] = v["video_id"]
            t["trending"] = bool(getattr(self, "_last_trending", False))
            # Hidden quality (picture, editing, singing) from a hash: it must not move the
            # random stream, so catalogs stay identical whether or not truth is written.
            h = int(hashlib.sha1(f"{self.seed}:{v['video_id']}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
            t["quality"] = round(0.25 + 0.75 * h, 3)
            yield v


def write_demo_catalog(out: str | Path, size: int = 20_000, seed: int = 7, kb: KnowledgeBase | None = None,
                       progress: bool = True) -> Path:
    """Write docs.jsonl (atomically), beside it dictionary.txt (the business dictionary), and
    truth/catalog_truth.jsonl: what each video really is (performer, song, role, hidden
    quality), for the log simulator's judge only — never read by training or serving code."""
    kb = kb or load_kb()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    gen = CatalogGenerator(kb, seed=seed)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp")
    from rich.progress import Progress

    truth_path = out.parent / "truth" / "catalog_truth.jsonl"
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    tfd, ttmp = tempfile.mkstemp(dir=truth_path.parent, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f, os.fdopen(tfd, "w", encoding="utf-8") as tf, \
            Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("generating catalog", total=size)
        for i, v in enumerate(gen.generate(size)):
            truth = v.pop("_truth")
            f.write(json.dumps(v, ensure_ascii=False) + "\n")
            tf.write(json.dumps(truth, ensure_ascii=False) + "\n")
            if i % 2000 == 0:
                bar.update(task, completed=i)
    os.replace(ttmp, truth_path)
    os.replace(tmp, out)
    write_dictionary(business_dictionary(kb), out.with_name("dictionary.txt"))
    return out


__all__ = ["CatalogGenerator", "write_demo_catalog", "REFERENCE_TIME"]
