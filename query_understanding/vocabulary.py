"""The music vocabulary that is not entity names: words that ask for a kind of video
(version words) and words that describe rather than name (mood, scene, genre). One list,
read by term weights, intent rules, spelling correction and the annotation tool's strata."""
from __future__ import annotations

# Version words: the query asks for a kind of video rather than (only) an entity.
VERSION_WORDS = frozenset("""live 现场 演唱会 翻唱 cover mv 伴奏 纯音乐 伴唱 舞蹈 翻跳 dance 教学 教程 吉他 钢琴 弹唱
    指弹 reaction 歌词 动态歌词 混剪 剪辑 ktv dj remix 完整版 高清 4k 1080p 官方 直拍 饭拍 练习室 mashup 串烧 vlog
    纯享""".split())

# Descriptive words: mood, scene, genre, "songs that…" queries (no entity named).
DESCRIPTIVE_WORDS = frozenset("""适合 好听 伤感 治愈 热门 经典 推荐 歌曲 的歌 歌单 背景音乐 bgm 抖音 励志 安静 开心 快乐 失恋
    跑步 健身 学习 睡前 睡觉 放松 工作 开车 浪漫 甜蜜 怀旧 古风 民谣 摇滚 说唱 电音 爵士 轻音乐 儿歌 情歌 老歌 新歌 英文歌 粤语歌
    日语歌 韩语歌 网红 流行 热歌 神曲 洗脑 燃 emo 婚礼 毕业 运动 自习 深夜 嗨 告白 经典老歌 听的歌""".split())
