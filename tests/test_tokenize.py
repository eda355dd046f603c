from query_understanding.tokenize import Tokenizer


def _tok(tmp_path, words):
    p = tmp_path / "dict.txt"
    p.write_text("".join(f"{w} 50000 artist\n" for w in words), encoding="utf-8")
    return Tokenizer(p)


def test_dictionary_names_never_split(tmp_path):
    t = _tok(tmp_path, ["周杰伦", "光年之外", "告五人", "x玖少年团"])
    assert t.tokenize("周杰伦光年之外") == ["周杰伦", "光年之外"]
    assert "告五人" in t.tokenize("告五人的歌")
    assert t.tokenize("x玖少年团") == ["x玖少年团"]


def test_latin_words_stay_whole(tmp_path):
    t = _tok(tmp_path, [])
    assert t.tokenize("jay chou gai") == ["jay", "chou", "gai"]


def test_protected_symbol_names(tmp_path):
    t = _tok(tmp_path, ["g.e.m."])
    assert t.tokenize("g.e.m. 邓紫棋") == ["g.e.m.", "邓紫棋"]
    assert t.tokenize("ac/dc") == ["ac/dc"]


def test_bundled_dictionary_keeps_kb_names(tmp_path):
    from search.kb import business_dictionary, load_kb, write_dictionary

    p = write_dictionary(business_dictionary(load_kb()), tmp_path / "d.txt")
    t = Tokenizer(p)
    for name in ("周杰伦", "田馥甄", "林俊杰", "五月天"):
        assert t.tokenize(name) == [name]
