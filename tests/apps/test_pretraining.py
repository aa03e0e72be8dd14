"""BERT pre-training runs (apps/pretraining.py): the two phases on a tiny model, and NSP learnt on our corpus (slow)."""

import keras
import numpy as np
import pytest

from apps.pretraining import pretrain_bert
from layers.bert import BertBackbone, BertPretrainer, minilm_files
from pipelines.bert_tokenizer import BertTokenizer
from pipelines.next_sentence import make_pretraining_dataset, next_sentence_pairs
from tests.pipelines.test_next_sentence import DOCUMENTS


@pytest.fixture(scope="module")
def tokenizer():
    return BertTokenizer.from_vocab_file(minilm_files() / "vocab.txt")


def _values(weights):
    return [np.array(w) for w in weights]


def test_the_probe_trains_the_heads_only_then_every_weight_learns(tokenizer):
    keras.utils.set_random_seed(0)
    model = BertPretrainer(BertBackbone(tokenizer.vocab_size, 1, 2, 16, 32, dropout=0.0))
    model.build()
    pairs = next_sentence_pairs(DOCUMENTS, seed=0)
    train = make_pretraining_dataset(pairs, tokenizer, 32, 8, seed=0, max_predictions=6).repeat()
    held_out = make_pretraining_dataset(pairs, tokenizer, 32, 40, shuffle=False, deterministic=True, max_predictions=6)
    backbone, heads = _values(model.backbone.weights), _values(model.masked_lm_head.weights)
    result = pretrain_bert(model, train, held_out, probe_steps=3, steps=0, probe_learning_rate=1e-2)
    assert all((a == b).all() for a, b in zip(backbone, _values(model.backbone.weights)))  # frozen in the probe
    assert any((a != b).any() for a, b in zip(heads, _values(model.masked_lm_head.weights)))
    assert model.backbone.trainable  # given back
    assert set(result) == {"before", "probed", "after"} and set(result["after"]) == {"mlm_loss", "nsp_accuracy"}
    pretrain_bert(model, train, held_out, steps=3, learning_rate=1e-3)
    assert any((a != b).any() for a, b in zip(backbone, _values(model.backbone.weights)))
    with pytest.raises(ValueError, match="not both 0"):
        pretrain_bert(model, train, held_out, steps=0)


@pytest.mark.slow
def test_a_short_run_from_minilm_lowers_the_mlm_loss_and_learns_nsp(tokenizer):
    """Issue 12's bar on a slice of our corpus: the sentence pairs of 4,000 Debian descriptions, 100 probe + 300 steps of
    32 x 64 pieces (442 s here with bf16, 2 cores shared), scored on 256 held-out pairs of the validation split's descriptions."""
    from apps.trainer import precision, resolve_precision
    from layers.bert import load_minilm
    from pipelines import tfds_sources

    keras.utils.set_random_seed(0)
    documents = tfds_sources.load_columns("summarization", split="train", limit=4000)["document"]
    held = next_sentence_pairs(tfds_sources.load_columns("summarization", split="validation", limit=300)["document"], seed=1)
    train = make_pretraining_dataset(next_sentence_pairs(documents, seed=0), tokenizer, 64, 32, seed=0,
                                     max_predictions=12).repeat()
    held_out = make_pretraining_dataset(tuple(x[:256] for x in held), tokenizer, 64, 64, seed=1, shuffle=False,
                                        deterministic=True, max_predictions=12).cache()
    with precision(resolve_precision("auto")[0]):
        model = BertPretrainer(load_minilm()[0])
        model.build()
        result = pretrain_bert(model, train, held_out, probe_steps=100, probe_learning_rate=3e-3, steps=300,
                               learning_rate=1e-4)
    print(result)
    assert result["after"]["mlm_loss"] < result["before"]["mlm_loss"] - 2.0, result
    assert result["before"]["nsp_accuracy"] < 0.56 and result["after"]["nsp_accuracy"] > 0.6, result
