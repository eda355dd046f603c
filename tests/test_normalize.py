import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from query_understanding.normalize import MAX_QUERY_CHARS, normalize


@pytest.mark.parametrize("raw,expected", [
    ("ＨＥＢＥ", "hebe"),
    ("周杰倫 晴天", "周杰伦 晴天"),
    ("  zjl\t晴天\x00 ", "zjl 晴天"),
    ("会不会😂 翻唱", "会不会 翻唱"),
    ("G.E.M. 邓紫棋《光年之外》", "g.e.m. 邓紫棋 光年之外"),
    ("AC/DC back in black!!", "ac/dc back in black"),
    ("S.H.E 不想长大", "s.h.e 不想长大"),
    ('"*:()[]{}^~\\/', ""),
    ("张學友　吻別", "张学友 吻别"),
    ("", ""),
])
def test_normalize_cases(raw, expected):
    assert normalize(raw) == expected


def test_long_input_is_capped():
    assert len(normalize("晴天" * 5000)) <= MAX_QUERY_CHARS


_alphabet = st.characters(blacklist_categories=("Cs",))
_music = st.sampled_from(["周杰倫", "ＨＥＢＥ", "G.E.M.", "S.H.E", "AC/DC", "😂", "《", "》", "\u3000", "\t", " ", "ß", "ﬁ", "Ⅻ", "①", "p!nk", "."])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.text(alphabet=_alphabet, max_size=12), _music), max_size=12).map("".join))
def test_normalize_is_idempotent(text):
    once = normalize(text)
    assert normalize(once) == once
