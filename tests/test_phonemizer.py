"""The phonemiser: ordinary German and English text to the phones of their inventories."""

import json
import pickle
import subprocess
import sys
from importlib import resources

import pytest

from speechpipe.corpus.synth import load_sentences
from speechpipe.phones.espeak import EspeakEngine, EspeakVoice
from speechpipe.phones.inventory import LANGUAGE_INVENTORIES, PhoneInventory, load_inventory
from speechpipe.phones.phonemizer import (
    LanguageSwitch,
    LanguageSwitchError,
    PhonemizeError,
    Phonemizer,
    normalise_text,
)

ENGLISH = [
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.",
    "The juice of lemons makes fine punch.",
    "Four hours of steady work faced us.",
    "Could you please pass me the butter and the jam?",
    "She measured the leisure time of the usual worker.",
    "Thousands of birds flew north over the frozen lake.",
    "Joy and noise filled the toy shop on Sunday.",
    "Their poor cousin was sure the tour would be cancelled.",
    "Why would anyone buy a bicycle without brakes?",
    "In 1969 the first humans walked on the Moon.",
    "Dr. Jones met Mrs. Brown at 10:30 on the 3rd of May.",
    "About 45% of the votes were counted, e.g. in Ohio.",
    "I'd rather be fishing, wouldn't you?",
    "Don’t forget to lock the door when you leave.",
    "The naïve student asked about the résumé at the café.",
    "Worcestershire sauce is spicy.",
    "Sixth, sixths, texts and tests.",
    "Photosynthesis converts sunlight into chemical energy.",
]

# Ordinary text that reaches every phone of phones_en.json; the rare ones come from loanwords and
# names in espeak-ng's en-us dictionary and letter rules (see the inventory's notes).
REACH_EN = [
    "The church bells rang in the judge's yard.",
    "I hear there are poor pure cars and doors in the fire tower.",
    "Button the cotton mitten.",
    "Better butter makes a better batter.",
    "The boy enjoyed the noisy toy.",
    "She measured the leisure time of the usual worker.",
    "Thin things thaw slowly in the north, and father thought about the ball.",
    "Our boat floated gently toward the oyster beds, as good cooks should.",
    "The idea was really happy and clear.",
    "We drank coffee by Loch Ness and in Utrecht.",
    "The choir sang in Llanelli.",
    "A jalapeno from Argyll.",
    "The unary operator in the artist's atelier.",
    "A croissant and a frisson.",
    "Mister Herrmann is often on the box.",
    "Five quick zebras vexed a wizard.",
]


@pytest.fixture(scope="module")
def en():
    return Phonemizer("en-us")


@pytest.fixture(scope="module")
def de():
    return Phonemizer("de")


def _without_marks(ipa: str, inventory: PhoneInventory) -> str:
    return "".join(c for c in ipa if c not in inventory.ignored and not c.isspace())


def test_inventory_file_has_the_german_file_format():
    def spec(name):
        return json.loads(resources.files("speechpipe.schemas").joinpath(name).read_text("utf-8"))

    german, english = spec("phones_de.json"), spec("phones_en.json")
    assert set(english) == set(german)
    assert english["ignored"] == german["ignored"]
    assert set(german["policy"]) <= set(english["policy"])
    for phone in english["phones"]:
        assert set(phone) <= {"ipa", "class", "note"} and phone["ipa"] and phone["class"], phone
    inventory = load_inventory("phones_en.json")
    assert inventory.name == english["name"] == "en-us-ipa"
    assert inventory.blank_id == inventory.size == len(english["phones"])
    assert LANGUAGE_INVENTORIES["en-us"] == "phones_en.json"


@pytest.mark.parametrize(
    ("ipa", "phones"),
    [
        ("fˈaɪɚ tˈaʊɚ", ["f", "aɪ", "ɚ", "t", "aʊ", "ɚ"]),  # espeak-ng's triphthongs are two phones
        ("dʒˈʌdʒᵻz", ["dʒ", "ʌ", "dʒ", "ᵻ", "z"]),
        ("kˈɑːɹz ænd dˈɔːɹz", ["k", "ɑːɹ", "z", "æ", "n", "d", "d", "ɔːɹ", "z"]),
        ("hˈɪɹ ðɛɹ pˈʊɹ", ["h", "ɪɹ", "ð", "ɛɹ", "p", "ʊɹ"]),
        ("bˈʌʔn̩", ["b", "ʌ", "ʔ", "n̩"]),
        ("bˈɑːɾəl", ["b", "ɑː", "ɾ", "ə", "l"]),  # syllabic l is ə + l
        ("kwˈɑːsɑ̃", ["k", "w", "ɑː", "s", "ɑ̃"]),
        ("aɪdˈiə", ["aɪ", "d", "iə"]),
        ("bˈɜːd", ["b", "ɜː", "d"]),
    ],
)
def test_english_tokenizer_cases(ipa, phones):
    assert load_inventory("phones_en.json").tokenize(ipa) == phones


def test_german_demo_sentences_give_the_demo_corpus_phones(de):
    """Text through the phonemiser gives what the demo corpus's manifests carry as IPA (the
    synthesiser's engine.phonemize), so a text corpus and an IPA corpus tokenise alike."""
    engine = EspeakEngine.get()
    inventory = load_inventory("phones_de.json")
    for sentence in load_sentences():
        ipa = de.phonemize(sentence)
        assert ipa == engine.phonemize(sentence, EspeakVoice()), sentence
        phones = de.phones(sentence)
        assert phones == inventory.tokenize(ipa)
        assert "".join(phones) == _without_marks(ipa, inventory)  # nothing lost but marks


def test_english_sentences_tokenize_into_the_english_inventory(en):
    inventory = load_inventory("phones_en.json")
    for sentence in ENGLISH:
        transcription = en.transcribe(sentence)
        assert transcription.phones, sentence
        assert set(transcription.phones) <= set(inventory.phones)
        assert "".join(transcription.phones) == _without_marks(transcription.ipa, inventory)
        assert not transcription.switches


def test_every_english_phone_is_reachable(en):
    used = set()
    for sentence in REACH_EN:
        used.update(en.phones(sentence))
    phones = load_inventory("phones_en.json").phones
    assert [p for p in phones if p not in used] == []
    assert used <= set(phones)


def test_numbers_and_abbreviations_are_spelled_out(en, de):
    assert en.phones("1984") == en.phones("nineteen hundred eighty four")
    assert en.phones("42 cats") == en.phones("forty two cats")
    assert de.phones("5 Euro") == de.phones("fünf Euro")
    assert de.phones("Dr. Müller")[:4] == ["d", "eː", "ɛ", "ɾ"]  # the letters D, R


def test_a_doubled_length_mark_is_one(en):
    # espeak-ng writes wˈiːː for "Wii"; ːː is no phone, and the vowel is iː.
    assert en.phones("Wii") == ["w", "iː"]


def test_nothing_is_held_over_into_the_next_text(en):
    """espeak-ng holds back a final one-letter word after a clause break ("a – b") and writes it
    at the start of the next text; the phonemiser finishes every text."""
    assert en.phones("a – b")[-2:] == ["b", "iː"]
    assert en.phonemize("hello") == Phonemizer("en-us").phonemize("hello") == "həlˈoʊ"
    assert en.phones("ok, x")[-2:] == ["k", "s"]
    assert en.phones("cat") == ["k", "æ", "t"]


def test_what_another_caller_left_held_back_is_flushed_first():
    EspeakEngine.get().phonemize("a – b", EspeakVoice(language="en-us"))  # leaves "b" held back
    assert Phonemizer("en-us").phonemize("hello") == "həlˈoʊ"


class _HoldingEngine:
    """An engine that still holds part of the text after the call, as espeak-ng can."""

    def phonemize(self, text, voice):
        return "bˈiː" if text == " " else "ˈeɪ"


def test_a_word_still_held_back_after_the_text_is_an_error():
    phonemizer = Phonemizer("en-us")
    phonemizer.phonemize("warm")  # takes the engine
    phonemizer._engine = _HoldingEngine()
    with pytest.raises(PhonemizeError, match="held back 'bˈiː'"):
        phonemizer.phones("a – b")


_CHILD = """
import json, sys
from speechpipe.phones.phonemizer import Phonemizer
texts = json.loads(sys.argv[1])
phonemizers = {"de": Phonemizer("de"), "en-us": Phonemizer("en-us")}
order = list(range(len(texts)))
if sys.argv[2] == "reversed":
    order.reverse()
out = {}
for i in order:
    language, text = texts[i]
    out[i] = phonemizers[language].phonemize(text)
print(json.dumps([out[i] for i in range(len(texts))], ensure_ascii=False))
"""


def test_output_is_the_same_across_processes_and_call_orders(en, de):
    # Interleaved languages, and texts that make espeak-ng hold a word over into the next call.
    texts = (
        [("en-us", s) for s in ENGLISH[:6]]
        + [("de", s) for s in load_sentences()[:6]]
        + [("en-us", "a – b"), ("en-us", "hello"), ("de", "ok, x"), ("de", "Haus"), ("en-us", "one – two")]
    )
    texts = [t for pair in zip(texts[::2], texts[1::2]) for t in pair] + texts[len(texts) // 2 * 2 :]
    runs = []
    for order in ("forward", "reversed"):
        result = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(texts), order], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(result.stdout))
    here = [(en if language == "en-us" else de).phonemize(text) for language, text in texts]
    assert runs[0] == runs[1] == here


def test_error_names_the_word_and_the_symbol():
    full = load_inventory("phones_en.json")
    without_theta = PhoneInventory("en-no-theta", tuple(p for p in full.phones if p != "θ"), full.ignored)
    phonemizer = Phonemizer("en-us", inventory=without_theta)
    assert phonemizer.phones("We went home today.")
    with pytest.raises(PhonemizeError) as error:
        phonemizer.phones("We went north today.")
    assert error.value.word == "north" and error.value.symbol == "θ"
    assert "'north'" in str(error.value) and "'θ'" in str(error.value)
    assert isinstance(error.value, ValueError)


def test_error_names_a_word_espeak_joins_to_its_neighbour():
    """espeak-ng writes "in the" as one IPA word (ɪnðə): the word is found in the text, word by word."""
    full = load_inventory("phones_en.json")
    without_eth = PhoneInventory("en-no-eth", tuple(p for p in full.phones if p != "ð"), full.ignored)
    with pytest.raises(PhonemizeError) as error:
        Phonemizer("en-us", inventory=without_eth).phones("A cat sat in the sun.")
    assert (error.value.word, error.value.symbol) == ("the", "ð")


def test_german_error_names_the_word_and_the_symbol():
    full = load_inventory("phones_de.json")
    without_c = PhoneInventory("de-no-ç", tuple(p for p in full.phones if p != "ç"), full.ignored)
    with pytest.raises(PhonemizeError) as error:
        Phonemizer("de", inventory=without_c).phones("Morgen möchte ich gehen.")
    assert (error.value.word, error.value.symbol) == ("möchte", "ç")


def test_a_length_mark_without_its_long_vowel_is_named_with_the_vowel():
    full = load_inventory("phones_en.json")
    without_long_i = PhoneInventory("en-no-iː", tuple(p for p in full.phones if p != "iː"), full.ignored)
    with pytest.raises(PhonemizeError) as error:
        Phonemizer("en-us", inventory=without_long_i).phones("I see.")
    assert (error.value.word, error.value.symbol) == ("see", "ː")
    assert "after 'i'" in str(error.value)


@pytest.mark.parametrize(
    ("language", "text", "word", "letter"),
    [
        ("en-us", "Hello Привет", "Привет", "П"),
        ("de", "Wir fahren nach Ελλάδα.", "Ελλάδα", "Ε"),
        ("en-us", "ＡＢＣ news", "ＡＢＣ", "Ａ"),  # fullwidth letters: espeak-ng reads their code points
    ],
)
def test_a_letter_of_another_script_is_an_error(language, text, word, letter):
    with pytest.raises(PhonemizeError) as error:
        Phonemizer(language).phones(text)
    assert (error.value.word, error.value.symbol) == (word, letter)
    assert repr(word) in str(error.value)


@pytest.mark.parametrize("text", ["", "   ", "\n\t ", "!!!", "...", "?!", "– —", '""', "(*)"])
def test_empty_or_punctuation_only_text_is_an_error(en, de, text):
    # espeak-ng itself reads "!!!" as "exclamation" and "*" as "asterisk": never a transcript.
    for phonemizer in (en, de):
        with pytest.raises(PhonemizeError) as error:
            phonemizer.phones(text)
        assert error.value.word is None


def test_a_language_switch_is_an_error_by_default(de):
    with pytest.raises(LanguageSwitchError) as error:
        de.phones("Das war richtig cool.")
    assert (error.value.word, error.value.language) == ("cool", "en")
    assert "'cool'" in str(error.value) and "en" in str(error.value)
    assert isinstance(error.value, PhonemizeError)


class _SwitchingEngine:
    """An engine that reads every word with British English's phoneme table, back to en-us."""

    def phonemize(self, text, voice):
        return "" if not text.strip() else "(en)tˈɒp(en-us)"


def test_british_english_is_a_switch_for_american_english():
    phonemizer = Phonemizer("en-us")
    phonemizer.phonemize("warm")  # takes the engine
    phonemizer._engine = _SwitchingEngine()
    with pytest.raises(LanguageSwitchError) as error:
        phonemizer.phones("top")
    assert (error.value.word, error.value.language) == ("top", "en")


def test_a_language_switch_kept_is_listed_and_its_phones_checked():
    keep = Phonemizer("de", language_switch="keep")
    transcription = keep.transcribe("Das war richtig cool.")
    assert [(s.word, s.language) for s in transcription.switches] == [("cool", "en")]
    assert isinstance(transcription.switches[0], LanguageSwitch)
    assert "(" not in transcription.ipa and ["k", "uː", "l"] == list(transcription.phones[-3:])
    # English phones that German lacks are still an error naming the word.
    with pytest.raises(PhonemizeError) as error:
        keep.phones("Ich habe das Update gemacht.")
    assert (error.value.word, error.value.symbol) == ("Update", "ʌ")
    assert "(en)" in str(error.value)


def test_text_normalisation_is_nfc_and_whitespace_only(en, de):
    assert normalise_text("  Guten\u00a0 Tag,\n\twie geht's? ") == "Guten Tag, wie geht's?"
    assert normalise_text("Cafe\u0301") == "Café"
    assert de.phonemize("Guten   Tag\n") == de.phonemize("Guten Tag")
    assert en.phonemize("cafe\u0301 au lait") == en.phonemize("café au lait")
    assert en.transcribe("  The   cat.  ").text == "The cat."


def test_unsupported_language_and_policy_are_refused():
    with pytest.raises(ValueError, match="en-us"):
        Phonemizer("fr")
    with pytest.raises(ValueError, match="language_switch"):
        Phonemizer("de", language_switch="drop")


def test_phonemizer_and_its_errors_pickle(en):
    """A DoFn carries its phonemizer to Beam workers; worker errors travel back pickled."""
    used = pickle.loads(pickle.dumps(en))
    assert used.phones("The cat sat.") == en.phones("The cat sat.")
    with pytest.raises(LanguageSwitchError) as error:
        Phonemizer("de").phones("Das war cool.")
    copy = pickle.loads(pickle.dumps(error.value))
    assert (type(copy), copy.word, copy.language, str(copy)) == (LanguageSwitchError, "cool", "en", str(error.value))
