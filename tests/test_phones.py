import pytest

from speechpipe.corpus.synth import load_sentences
from speechpipe.phones.espeak import EspeakEngine, EspeakVoice
from speechpipe.phones.inventory import UnknownPhoneError, default_inventory
from tests.helpers import read_manifest


@pytest.fixture(scope="module")
def inventory():
    return default_inventory()


def test_every_demo_sentence_tokenizes(inventory):
    engine = EspeakEngine.get()
    used = set()
    for sentence in load_sentences():
        ipa = engine.phonemize(sentence, EspeakVoice())
        phones = inventory.tokenize(ipa)
        assert phones, sentence
        used.update(phones)
        # nothing but ignored marks is lost: the phones spell out the IPA without them
        stripped = "".join(c for c in ipa if c not in inventory.ignored and not c.isspace())
        assert "".join(phones) == stripped
    assert {"pf", "ts", "aɪ", "aʊ", "iː", "yː", "øː", "ç", "x", "ŋ"} <= used


def test_manifest_phones_tokenize(tiny_corpus, inventory):
    for record in read_manifest(tiny_corpus):
        assert inventory.tokenize(record["phones"])


@pytest.mark.parametrize(
    ("ipa", "phones"),
    [
        ("ˈapfəl", ["a", "pf", "ə", "l"]),  # affricate even where espeak segments p + f
        ("kvˈatʃ", ["k", "v", "a", "tʃ"]),
        ("tsˈaɪt", ["ts", "aɪ", "t"]),
        ("bˈoːt bˈɔømə", ["b", "oː", "t", "b", "ɔø", "m", "ə"]),
        ("foː.ɐ", ["f", "oː", "ɐ"]),  # syllable mark removed
        ("dʊɐç", ["d", "ʊɐ", "ç"]),
    ],
)
def test_tokenizer_cases(inventory, ipa, phones):
    assert inventory.tokenize(ipa) == phones


@pytest.mark.parametrize(("ipa", "symbol"), [("haʘo", "ʘ"), ("ɬa", "ɬ"), ("aːː", "ː"), ("(en)hɛlo", "(")])
def test_unknown_symbol_is_named(inventory, ipa, symbol):
    with pytest.raises(UnknownPhoneError) as error:
        inventory.tokenize(ipa)
    assert error.value.symbol == symbol
    assert repr(symbol) in str(error.value)


def test_ids_and_blank(inventory):
    ids = inventory.encode("ˈapfəl")
    assert inventory.decode(ids) == ["a", "pf", "ə", "l"]
    assert inventory.blank_id == inventory.size == inventory.num_classes - 1
    assert inventory.blank_id not in ids
    with pytest.raises(ValueError):
        inventory.decode([inventory.blank_id])
