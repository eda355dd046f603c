"""NER: dictionary matching with ambiguity, the BiLSTM-CRF (CRF arithmetic against brute
force, learning from context), the ensemble, evaluation, and the QU output."""
import itertools
import json

import numpy as np
import pytest
import torch

from query_understanding.evaluation import evaluate_ner, ner_gold_from_intents
from query_understanding.ner import EntityRecognizer, NerConfig
from query_understanding.ner.lexicon import EntityLexicon
from query_understanding.ner.tagger import CRF, TAGS, TAG_ID, NerTagger, TaggerConfig, marginals, viterbi
from query_understanding.ner.train import TrainConfig, train_tagger
from query_understanding.ner.training_data import LabelledText, from_catalog, label_with, read_cais

ENTRIES = [("周杰伦", "artist"), ("晴天", "song"), ("稻香", "song"), ("田馥甄", "artist"), ("hebe", "artist"), ("he", "artist"),
           ("小幸运", "song"), ("会不会", "song"), ("中国好声音", "show"), ("后来", "song"), ("刘若英", "artist")]


@pytest.fixture(scope="module")
def lexicon():
    return EntityLexicon.build(ENTRIES, ["故事的小黄花"])


def read(lx, text):
    return [(m.text, m.type) for m in lx.match(text) if m.score >= 0.5]


def test_dictionary_reading_and_ambiguity(lexicon):
    assert read(lexicon, "周杰伦 晴天 live") == [("周杰伦", "artist"), ("晴天", "song"), ("live", "version")]
    assert read(lexicon, "晴天") == [("晴天", "song")]                 # the whole query: navigational
    assert read(lexicon, "今天是晴天吗") == []                          # an everyday word, nothing supports the song
    assert [m.ambiguous for m in lexicon.match("今天是晴天吗")] == [True]
    assert read(lexicon, "hebe 小幸运") == [("hebe", "artist"), ("小幸运", "song")]   # not "he" inside "hebe"
    assert read(lexicon, "故事的小黄花") == [("故事的小黄花", "lyric")]
    assert read(lexicon, "粤语 经典老歌") == [("粤语", "language"), ("经典老歌", "mood")]


def _brute(em, trans, start, end):
    T, K = em.shape
    scores = {}
    for path in itertools.product(range(K), repeat=T):
        s = start[path[0]] + em[0, path[0]] + end[path[-1]]
        s += sum(trans[path[t - 1], path[t]] + em[t, path[t]] for t in range(1, T))
        scores[path] = s
    return scores


def test_crf_viterbi_marginals_and_likelihood_match_brute_force():
    torch.manual_seed(0)
    crf = CRF(len(TAGS))
    with torch.no_grad():
        crf.trans.normal_()
        crf.start.normal_()
        crf.end.normal_()
    trans, start, end = crf.numpy_params()
    # keep it enumerable: 3 positions over the first 5 tags (O, B-artist, I-artist, B-song, I-song)
    K, T = 5, 3
    em = np.random.default_rng(0).normal(size=(T, K))
    em_full = np.full((T, len(TAGS)), -1e4)
    em_full[:, :K] = em
    scores = _brute(em, trans[:K, :K], start[:K], end[:K])
    best = max(scores, key=scores.get)
    assert tuple(viterbi(em_full, trans, start, end)) == best
    assert not TAGS[best[0]].startswith("I-")  # BIO constraint: no span starts inside
    log_z = np.log(sum(np.exp(v) for v in scores.values()))
    marg = marginals(em_full, trans, start, end)
    want = np.zeros((T, K))
    for path, v in scores.items():
        for t, k in enumerate(path):
            want[t, k] += np.exp(v - log_z)
    np.testing.assert_allclose(marg[:, :K], want, atol=1e-6)
    np.testing.assert_allclose(marg.sum(1), 1.0, atol=1e-6)
    gold = torch.tensor([list(best)])
    nll = crf.nll(torch.tensor(em_full, dtype=torch.float32).unsqueeze(0), gold, torch.ones(1, T, dtype=torch.bool))
    assert nll.item() == pytest.approx(log_z - scores[best], abs=1e-3)


def _toy_corpus(n=600, seed=0):
    import random

    rng = random.Random(seed)
    syll = list("安白晨东飞歌海华江凯乐明南琪森天望心阳羽真")
    def name(k):
        return "".join(rng.choice(syll) for _ in range(k))
    items = []
    for _ in range(n):
        a, s = name(3), name(rng.choice([2, 3, 4]))
        shape = rng.choice(["{a} {s}", "我想听{a}的{s}", "{s} 现场", "{a}的歌", "今天是晴天吗", "{a} {s} 翻唱", "{a} 晴天"])
        if shape == "{a} 晴天":  # the same word as a song, next to an artist
            s = "晴天"
        text = shape.format(a=a, s=s)
        items.append(LabelledText(text, label_with(text, [(a, "artist"), (s, "song"), ("现场", "version"), ("翻唱", "version")]), "toy"))
    return items


def test_tagger_learns_context_and_ensemble_resolves(tmp_path, lexicon):
    items = _toy_corpus()
    path = tmp_path / "ner.pt"
    tagger = train_tagger(items, lexicon, path, TrainConfig(epochs=6, seed=0, lexicon_dropout=0.5, batch_size=32),
                          TaggerConfig(char_dim=24, lex_dim=8, hidden=32))
    # names it has never seen, found from the shape of the query
    spans = tagger.predict("我想听望凯东的真森")
    got = {("我想听望凯东的真森"[s.start:s.end], s.type) for s in spans}
    assert ("望凯东", "artist") in got and ("真森", "song") in got
    loaded = NerTagger.load(path)
    assert [(s.start, s.end, s.type) for s in loaded.predict("我想听望凯东的真森")] == [(s.start, s.end, s.type) for s in spans]
    rec = EntityRecognizer(lexicon, loaded, NerConfig())
    assert [(e.text, e.type) for e in rec.recognize("今天是晴天吗")] == []
    ents = rec.recognize("周杰伦 晴天 现场")
    assert [(e.text, e.type) for e in ents] == [("周杰伦", "artist"), ("晴天", "song"), ("现场", "version")]
    assert all(0 < e.score <= 1 for e in ents)


def test_model_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-ner"):
        NerTagger.load(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"format": 0, "tags": ["O"]}, bad)
    with pytest.raises(ValueError, match="another tag set"):
        NerTagger.load(bad)


def test_training_labels_from_catalog_metadata(lexicon):
    recs = [{"title": "周杰伦《晴天》官方MV", "artists": ["周杰伦"], "songs": ["晴天"], "tags": []},
            {"title": "今天是晴天 出门vlog", "artists": [], "songs": ["夏天的风"], "tags": []}]
    a, b = from_catalog(recs, lexicon)
    assert {(a.text[s:e], t) for s, e, t in a.spans} == {("周杰伦", "artist"), ("晴天", "song"), ("mv", "version"), ("官方", "version")}
    assert ("晴天", "song") not in {(b.text[s:e], t) for s, e, t in b.spans}  # not this video's song: a negative


def test_cais_reader_maps_slots(tmp_path):
    f = tmp_path / "x.bio"
    f.write_text("我 O\n要 O\n听 O\n吴 B-singer_name\n雨 I-singer_name\n霏 E-singer_name\n的 O\n粤 B-song_language\n语 E-song_language\n歌 O\n\n"
                 "讲 O\n故 O\n事 O\n白 B-story_name\n雪 E-story_name\n", encoding="utf-8")
    a, b = read_cais(f)
    assert {(a.text[s:e], t) for s, e, t in a.spans} == {("吴雨霏", "artist"), ("粤语", "language")}
    assert b.spans == []


def test_entity_f1_and_gold_from_generated_queries(lexicon):
    gold = ner_gold_from_intents([{"query": "周杰伦 晴天", "kind": "artist_song", "artist": "周杰伦", "song": "晴天"},
                                  {"query": "晴天 现场", "kind": "version", "song": "晴天", "version": "现场"}])
    rec = EntityRecognizer(lexicon)
    rep = evaluate_ner(rec.recognize, gold)
    assert rep["f1"] == 1.0 and rep["by_type"]["song"]["support"] == 2
    none = evaluate_ner(lambda t: [], gold)
    assert none["recall"] == 0.0 and none["f1"] == 0.0


def test_understood_query_carries_entities(pipeline):
    q = pipeline.understand("周杰伦 晴天 live")
    assert [(e.text, e.type) for e in q.entities][:2] == [("周杰伦", "artist"), ("晴天", "song")]
    e = q.entities[0]
    assert q.normalized[e.char_start:e.char_end] == "周杰伦" and q.tokens[e.token_start].text == "周杰伦"
    assert ("live", "version") in {(e.text, e.type) for e in q.entities}
    plain = pipeline.understand("今天是晴天吗")
    assert not any(e.type == "song" for e in plain.entities) and not any(t.entity_type for t in plain.tokens)
    assert "ner" in q.explain["steps"]


def test_ensemble_never_cuts_known_names(lexicon):
    from query_understanding.ner.tagger import Span

    rec = EntityRecognizer(lexicon, None, NerConfig())
    text = "周杰伦 晴天"
    matches = lexicon.match(text)
    outside = np.array([0.05] * len(text))
    cut = rec._ensemble(text, matches, [Span(1, 3, "artist", 0.9)], outside)     # half of a sure name
    assert ("周杰伦", "artist") in [(e.text, e.type) for e in cut]
    longer = rec._ensemble("新歌稻香花开", lexicon.match("新歌稻香花开"), [Span(2, 6, "song", 0.9)], np.array([0.05] * 6))
    # a longer new title around a known song name wins; 新歌 stays a (mood) word of its own
    assert [(e.text, e.type, e.source) for e in longer] == [("新歌", "mood", "dictionary"), ("稻香花开", "song", "tagger")]
