"""Build the compact music knowledge base bundled with the project.

Inputs (read-only): `../shared/data/music_kb/*` (encyclopedia singers and songs, NetEase
artist categories, NetEase playlists with tags) and `search/kb/curated.json` (hand-curated
English names, nicknames, group line-ups, shows, famous lyric lines, with their source).
Output: `search/kb/kb.json.gz`, facts only (names, aliases, links, tags, popularity priors),
so the demo works on machines without `../shared/`.

    mvsearch kb build --data ../shared/data
"""
from __future__ import annotations

import csv
import gzip
import json
import math
import os
import re
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from pypinyin import Style, lazy_pinyin

HERE = Path(__file__).parent
DEFAULT_OUT = HERE / "kb.json.gz"
CURATED = HERE / "curated.json"

SOURCES = {
    "windmusickg": "music_kb/windmusickg_singers.tsv, windmusickg_songs.tsv (encyclopedia singers/songs, via WindMusicKG)",
    "netease_singers": "music_kb/netease_singers.json (NetEase artist categories)",
    "music163_playlists": "music_kb/music163_playlist_songs.txt, music163_playlists.csv (NetEase playlists: song-artist links, playlist tags, play counts)",
    "curated": "search/kb/curated.json (hand-curated English names, nicknames, group members, shows, lyric lines)",
    "pypinyin": "romanizations (full pinyin and initials) generated with pypinyin",
}

_ALIAS_SPLIT = re.compile(r"[、，,；;/|]+")
_PAREN = re.compile(r"[（(][^）)]*[）)]")
_HAS_KANA = re.compile(r"[\u3040-\u30ff]")
_HAS_HANGUL = re.compile(r"[\uac00-\ud7af]")
_HAS_HAN = re.compile(r"[\u4e00-\u9fff]")
_MOOD_TAGS = {"放松", "浪漫", "治愈", "驾车", "夜晚", "怀旧", "快乐", "伤感", "孤独", "清新", "安静", "兴奋", "运动", "学习", "感动", "性感", "旅行", "清晨", "思念", "工作", "散步", "下午茶", "酒吧", "午休", "婚礼", "校园", "游戏", "舞曲"}
_STYLE_TAGS = {"流行", "R&B/Soul", "电子", "轻音乐", "说唱", "摇滚", "ACG", "爵士", "另类/独立", "影视原声", "钢琴", "民谣", "器乐", "古典", "古风", "网络歌曲", "民族", "乡村", "蓝调", "后摇", "英伦", "世界音乐", "金属", "朋克", "新世纪", "拉丁", "儿童", "综艺"}
_LANG_TAGS = {"华语": "zh", "欧美": "en", "日语": "ja", "韩语": "ko", "粤语": "yue"}


def _clean_alias(a: str) -> str:
    a = _PAREN.sub("", a).strip(" \t\"'“”")
    return a if 1 < len(a) <= 30 and a.upper() != "NULL" else ""


def romanize(name: str) -> tuple[str, str]:
    """Full pinyin and initials of the Han part of a name ('' when it has no Han)."""
    if not _HAS_HAN.search(name):
        return "", ""
    syl = [s for s in lazy_pinyin(name, style=Style.NORMAL, errors="ignore") if s.isascii() and s.isalpha()]
    return "".join(syl).lower(), "".join(s[0] for s in syl).lower()


def guess_language(name: str, nationality: str = "", birthplace: str = "") -> str:
    if _HAS_KANA.search(name) or "日本" in nationality:
        return "ja"
    if _HAS_HANGUL.search(name) or "韩国" in nationality:
        return "ko"
    if "香港" in birthplace or "香港" in nationality:
        return "yue"
    if _HAS_HAN.search(name) or nationality in ("中国", "中华人民共和国", "马来西亚", "新加坡"):
        return "zh"
    return "en"


def _write_atomic_gz(obj: Any, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp")
    os.close(fd)
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)


def build_kb(data_dir: str | Path, out: str | Path = DEFAULT_OUT, curated_path: str | Path = CURATED) -> dict[str, Any]:
    kb_dir = Path(data_dir) / "music_kb"
    curated = json.loads(Path(curated_path).read_text(encoding="utf-8"))

    artists: dict[str, dict[str, Any]] = {}

    def artist(name: str) -> dict[str, Any]:
        name = name.strip()
        if name not in artists:
            artists[name] = {"name": name, "aliases": [], "english": [], "kind": "solo", "region": "", "language": "",
                             "members": [], "groups": [], "genres": [], "signature_songs": [], "sources": [],
                             "plays": 0, "songs_n": 0}
        return artists[name]

    # Encyclopedia singers: aliases, nationality.
    with open(kb_dir / "windmusickg_singers.tsv", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            name = (row["chinese_name"] or row["baike_name"]).strip()
            if not name or name == "NULL":
                continue
            a = artist(name)
            a["sources"].append("windmusickg")
            for al in _ALIAS_SPLIT.split(row.get("alias_name") or ""):
                al = _clean_alias(al)
                if al and al != name and al not in a["aliases"]:
                    a["aliases"].append(al)
            en = _clean_alias(row.get("english_name") or "")
            if en and en not in a["english"]:
                a["english"].append(en)
            if not a["language"]:
                a["language"] = guess_language(name, row.get("nationality") or "", row.get("birthplace") or "")
            if "乐队" in (row.get("career") or "") or "组合" in (row.get("career") or ""):
                a["kind"] = "group"

    songs: dict[tuple[str, str], dict[str, Any]] = {}

    def song(title: str, artist_names: list[str]) -> dict[str, Any]:
        key = (title, "|".join(artist_names))
        if key not in songs:
            songs[key] = {"title": title, "artists": artist_names, "tags": Counter(), "plays": 0, "sources": []}
        return songs[key]

    with open(kb_dir / "windmusickg_songs.tsv", encoding="utf-8") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            t, s = (row["song_name"] or "").strip(), (row["singer_name"] or "").strip()
            if t and s and t != "NULL":
                song(t, [s])["sources"].append("windmusickg")
                artist(s)["songs_n"] += 1

    for row in json.loads((kb_dir / "netease_singers.json").read_text(encoding="utf-8")):
        a = artist(row["name"])
        a["sources"].append("netease_singers")
        a["kind"] = {"华语组合/乐队": "group"}.get(row["category"], a["kind"])
        a["language"] = a["language"] or "zh"

    # Playlists: song-artist links, style/mood tags, play counts as a popularity prior.
    with open(kb_dir / "music163_playlist_songs.txt", encoding="utf-8") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            head = cols[0].split("##")
            labels = head[1].split() if len(head) > 1 else []
            plays = int(head[3]) if len(head) > 3 and head[3].isdigit() else 0
            for item in cols[1:]:
                parts = item.split("::")
                if len(parts) < 3 or not parts[1].strip() or not parts[2].strip():
                    continue
                names = [n.strip() for n in parts[2].split("|") if n.strip()][:3]
                s = song(parts[1].strip(), names)
                s["tags"].update(labels)
                s["plays"] += plays
                if "music163_playlists" not in s["sources"]:
                    s["sources"].append("music163_playlists")
                for n in names:
                    a = artist(n)
                    a["plays"] += plays
                    if "music163_playlists" not in a["sources"]:
                        a["sources"].append("music163_playlists")
                    if not a["language"]:
                        lang = [ _LANG_TAGS[t] for t in labels if t in _LANG_TAGS]
                        a["language"] = lang[0] if lang else guess_language(n)

    # Curated facts override and extend.
    for rank, c in enumerate(curated["artists"]):
        a = artist(c["name"])
        a["sources"].append("curated")
        a["curated_rank"] = rank  # the curated list is ordered by how much users search for them
        a["english"] = list(dict.fromkeys(c.get("english", []) + a["english"]))
        for al in c.get("nicknames", []):
            if al not in a["aliases"] and al != a["name"]:
                a["aliases"].append(al)
        for k in ("kind", "region", "language"):
            if c.get(k):
                a[k] = c[k]
        for k in ("members", "groups", "genres", "signature_songs"):
            a[k] = list(dict.fromkeys(a[k] + c.get(k, [])))
        for t in c.get("signature_songs", []):
            s = song(t, [a["name"]])
            s["sources"].append("curated")
            s["signature"] = True

    for e in curated.get("extra_songs", []):
        s = song(e["title"], list(e["artists"]))
        s["sources"].append("curated")
        s["signature"] = True
        for n in e["artists"]:
            if "curated" not in artist(n)["sources"]:
                artist(n)["sources"].append("curated")

    # Popularity prior: log playlist plays + catalogue depth + curated (users type them most).
    for a in artists.values():
        a["popularity"] = round(math.log1p(a["plays"]) + 0.8 * math.log1p(a["songs_n"]) + (4.0 if "curated" in a["sources"] else 0.0), 4)
        a["pinyin"], a["initials"] = romanize(a["name"])
        a["sources"] = sorted(set(a["sources"]))
        if a["pinyin"]:
            a["sources"].append("pypinyin")
        if not a["language"]:
            a["language"] = guess_language(a["name"])
        del a["plays"], a["songs_n"]

    # Keep songs whose artists we know well enough to build videos about; drop noise.
    known = {n for n, a in artists.items() if set(a["sources"]) - {"music163_playlists", "pypinyin"} or a["popularity"] > 12}
    out_songs = []
    for s in songs.values():
        if not any(n in known for n in s["artists"]) and s["plays"] < 5_000_000:
            continue
        tags = [t for t, _ in s["tags"].most_common(6)]
        out_songs.append({
            "title": s["title"], "artists": s["artists"],
            "styles": [t for t in tags if t in _STYLE_TAGS][:3],
            "moods": [t for t in tags if t in _MOOD_TAGS][:3],
            "popularity": round(math.log1p(s["plays"]) + (3.0 if s.get("signature") else 0.0), 4),
            "sources": sorted(set(s["sources"])),
        })
    used = {n for s in out_songs for n in s["artists"]} | {c["name"] for c in curated["artists"]}
    for c in curated["artists"]:
        used.update(c.get("members", []))
        used.update(c.get("groups", []))
    out_artists = sorted((a for n, a in artists.items() if n in used or a["aliases"] or "windmusickg" in a["sources"]),
                         key=lambda a: (-a["popularity"], a["name"]))
    out_songs.sort(key=lambda s: (-s["popularity"], s["title"]))
    kb = {
        "sources": SOURCES,
        "curated_source": curated.get("source", ""),
        "artists": out_artists,
        "songs": out_songs,
        "shows": curated.get("shows", []),
        "lyrics": curated.get("lyrics", []),
    }
    _write_atomic_gz(kb, Path(out))
    return kb
