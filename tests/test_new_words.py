import random

from query_understanding.new_words import discover, write_candidates


def test_discovers_a_new_name_in_varied_contexts(tmp_path):
    rng = random.Random(0)
    before = ["今天", "超好听", "【翻唱】", "最新", "现场版", "我的", "听说", "全网"]
    after = ["日文版", "主题曲", "舞蹈", "合集", "鬼畜", "教学", "现场", "完整版"]
    texts = [f"{rng.choice(before)}蜜雪冰城{rng.choice(after)}" for _ in range(300)]
    texts += [f"{rng.choice(before)}随便写写{rng.choice(after)}" for _ in range(5)]  # too rare
    # Background text, so the new word is a small part of the corpus as in a real catalog.
    filler = "春夏秋冬山水花鸟风云雨雪日月星辰江河湖海城乡街巷歌舞琴瑟诗书画影光声色香味"
    texts += ["".join(rng.choice(filler) for _ in range(12)) for _ in range(4000)]
    known = {"今天", "超好听", "翻唱", "最新", "现场版", "我的", "听说", "全网", "日文版", "主题曲", "舞蹈", "合集", "鬼畜", "教学", "现场", "完整版"}
    words = discover(texts, known, min_freq=8)
    top = [w.word for w in words[:3]]
    assert "蜜雪冰城" in top
    assert not any(w.word in ("蜜雪冰", "雪冰城", "雪冰") for w in words)   # fragments of the longer word
    assert not any(w.word in known for w in words)
    assert all(w.word != "随便写写" for w in words)
    p = write_candidates(words, tmp_path / "nw.tsv")
    assert p.read_text(encoding="utf-8").splitlines()[0].startswith("word\tfreq\tcohesion")


def test_known_words_glued_together_are_not_new():
    texts = ["周杰伦晴天"] * 50 + ["晴天周杰伦"] * 50
    words = discover(texts, {"周杰伦", "晴天"}, min_freq=5, min_entropy=0.0)
    assert all(w.word not in ("周杰伦晴天", "晴天周杰伦") for w in words)
