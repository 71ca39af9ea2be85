import json
from pathlib import Path

from ioi.tokenizer import EOS_ID, gpt2_tokenizer

REFERENCE = Path(__file__).parents[2] / "ioi" / "data" / "gpt2_small_ioi.json"


def test_ids_match_gpt2_for_the_reference_names():
    tok = gpt2_tokenizer()
    ids = json.loads(REFERENCE.read_text())["eight_prompts"]["answer_token_ids"]
    for name, expected in ids.items():
        assert tok.encode(name, add_special_tokens=False) == [expected], name


def test_sentence_ids_and_special_tokens():
    tok = gpt2_tokenizer()
    assert len(tok) == 50257
    assert tok.bos_token_id == tok.eos_token_id == tok.pad_token_id == EOS_ID
    text = "When Mary and John went to the store, John gave a drink to"
    bare = tok.encode(text, add_special_tokens=False)
    assert bare == [2215, 5335, 290, 1757, 1816, 284, 262, 3650, 11, 1757, 2921, 257, 4144, 284]
    assert tok.encode(text) == [EOS_ID, *bare]  # BOS once when asked for special tokens
    assert tok.decode(bare) == text
