import pytest

from query_understanding.correction import CharBigramLM, CorrectionConfig, Corrector
from query_understanding.normalize import normalize
from search.kb import business_dictionary, load_kb, write_dictionary
from search.pipeline import SearchRequest


@pytest.fixture(scope="module")
def corrector(catalog_path):
    import json

    titles = [json.loads(line)["title"] for line in open(catalog_path, encoding="utf-8")]
    return Corrector.build(load_kb(), titles)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from query_understanding.tokenize import Tokenizer

    p = write_dictionary(business_dictionary(load_kb()), tmp_path_factory.mktemp("d") / "dict.txt")
    return Tokenizer(p)


@pytest.mark.parametrize("typed,expected,reason", [
    ("周杰轮", "周杰伦", "homophone"),          # a typo that also makes jieba split the name
    ("林俊节 江南", "林俊杰 江南", "homophone"),
    ("薛之千", "薛之谦", "homophone"),
    ("zhoujielun", "周杰伦", "full_pinyin"),
    ("zhoujielun晴天", "周杰伦晴天", "full_pinyin"),  # mixed pinyin / Chinese (the user's spacing is kept)
    ("zhoujielum", "周杰伦", "latin_typo"),          # keyboard slip in pinyin
    ("zhoujielunqingtian", "周杰伦 晴天", "full_pinyin"),
    ("zjl 晴天", "周杰伦 晴天", "initials"),
    ("jaychou", "jay chou", "english_spacing"),
])
def test_corrects_music_typos(corrector, tok, typed, expected, reason):
    n = normalize(typed)
    res = corrector.correct(n, tok.tokenize(n))
    assert res.text == expected
    c = res.corrections[0]
    assert c["reason"] == reason and c["applied"] and 0.7 <= c["confidence"] <= 1.0


@pytest.mark.parametrize("q", ["晴天", "周杰伦 晴天", "会不会 翻唱", "适合跑步的歌", "hebe", "故事的小黄花", "g.e.m. 光年之外"])
def test_leaves_correct_queries_alone(corrector, tok, q):
    n = normalize(q)
    res = corrector.correct(n, tok.tokenize(n))
    assert res.text == n and not [c for c in res.corrections if c["applied"]]


def test_low_confidence_becomes_a_rewrite_not_a_correction(corrector, tok):
    strict = Corrector(corrector.lexicon, corrector.english, corrector.lm, config=CorrectionConfig(apply_threshold=0.999, rewrite_threshold=0.3))
    n = normalize("林俊节 江南")
    res = strict.correct(n, tok.tokenize(n))
    assert res.text == n  # kept
    assert res.rewrites == ["林俊杰 江南"] and res.corrections[0]["applied"] is False


def test_query_log_frequency_breaks_ties(tok):
    lm = CharBigramLM.fit(["abc"])
    lex = {"张三": 1.0, "章三": 1.0}
    a = Corrector(lex, {}, lm, query_freq={"张三": 50})
    b = Corrector(lex, {}, lm, query_freq={"章三": 50})
    assert a.correct_token("樟三")[0].text == "张三"
    assert b.correct_token("樟三")[0].text == "章三"


def test_save_and_load_round_trip(corrector, tmp_path):
    p = tmp_path / "c.json.gz"
    corrector.save(p)
    again = Corrector.load(p)
    assert again.correct_token("zhoujielun")[0].text == "周杰伦"


def test_pipeline_searches_the_corrected_query(pipeline):
    res = pipeline.search(SearchRequest("周杰轮 晴天"))
    assert res.query.normalized == "周杰伦 晴天"
    assert res.query.corrections and res.query.corrections[0].reason == "homophone"
    assert res.hits[0].video_id in ("t-qingtian-mv", "t-qingtian-live")
    assert "correct" in res.stages["understanding"]["steps"]


def test_eval_qu_counts_normalization_and_correction(pipeline):
    from query_understanding.evaluation import evaluate_correction

    pairs = [{"typed": "周杰轮 晴天", "clean": "周杰伦 晴天", "noise": "homophone"},
             {"typed": "周杰倫 晴天", "clean": "周杰伦 晴天", "noise": "traditional"},
             {"typed": "xyzxyzxyz", "clean": "周杰伦", "noise": "keyboard"}]
    rep = evaluate_correction(pipeline.understand, pairs, ["周杰伦 晴天", "会不会 翻唱"])
    assert rep.pairs == 3 and rep.corrected == 1 and rep.precision == 1.0
    assert abs(rep.recall - 2 / 3) < 1e-9 and rep.false_correction_rate == 0.0
    assert rep.by_noise["traditional"]["recall"] == 1.0 and rep.by_noise["keyboard"]["recall"] == 0.0
