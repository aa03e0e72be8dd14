"""apps/speculative.py: greedy output equals the target's greedy output; sampling follows the target's distribution."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from apps.speculative import SpeculativeDecoder
from layers.generation import TextGenerator
from layers.transformer_models import Transformer, TransformerCausalLM

VOCAB, MAX_LENGTH, NEW = 50, 24, 20
# Same width, so one compiled loop serves all three; 4 + 20 = MAX_LENGTH, so the last
# rounds' verification chunks would run past the positions and must start earlier.
PROMPTS = np.array([[3, 4, 5, 6], [7, 1, 2, 9], [11, 12, 13, 14]], "int32")


def random_lm(num_layers, hidden_dim, seed):
    """A random untied LM with large weights: peaked, varied next-token distributions (no near ties)."""
    keras.utils.set_random_seed(seed)
    lm = TransformerCausalLM(VOCAB, MAX_LENGTH, num_layers=num_layers, hidden_dim=hidden_dim, tie_embeddings=False)
    lm.build()
    for weight in lm.weights:
        if len(weight.shape) >= 2:
            weight.assign(weight * 3.0 if "kernel" in weight.path else tf.random.normal(weight.shape))
    return lm


def perturbed_copy(lm, noise, seed):
    """The same architecture with noise on every weight: a draft that agrees with ``lm`` only part of the time."""
    copy = TransformerCausalLM.from_config(lm.get_config())
    copy.build()
    rng = np.random.default_rng(seed)
    copy.set_weights([w + noise * (w.std() + 1e-3) * rng.standard_normal(w.shape).astype("float32")
                      for w in lm.get_weights()])
    return copy


@pytest.fixture(scope="module")
def models():
    target = random_lm(2, 32, seed=1)
    return {
        "target": target,
        "perturbed": perturbed_copy(target, 0.2, seed=0),
        "other": random_lm(1, 16, seed=2),
    }


@pytest.fixture(scope="module")
def greedy_reference(models):
    generator = TextGenerator(models["target"], max_new_tokens=NEW)
    return [generator(prompt[None])["token_ids"] for prompt in PROMPTS]


@pytest.mark.parametrize("k,draft", list(itertools.product([1, 3, 5], ["perturbed", "other", "target"])))
def test_greedy_output_is_the_targets_greedy_output(models, greedy_reference, k, draft):
    decoder = SpeculativeDecoder(models["target"], models[draft], num_draft_tokens=k, max_new_tokens=NEW)
    proposed = accepted = 0
    for prompt, reference in zip(PROMPTS, greedy_reference):
        out = decoder(prompt[None])
        np.testing.assert_array_equal(out["token_ids"], reference)
        assert out["lengths"].tolist() == [len(prompt) + NEW] and out["stats"].new_tokens == NEW
        s = out["stats"]
        assert s.draft_tokens_accepted <= s.draft_tokens_proposed <= k * s.target_calls
        # Every target pass emits between 1 and k + 1 tokens.
        assert s.target_calls <= NEW <= (k + 1) * s.target_calls
        proposed, accepted = proposed + s.draft_tokens_proposed, accepted + s.draft_tokens_accepted
        if draft == "target":
            assert s.acceptance_rate == 1.0 and s.target_calls == -(-NEW // (k + 1))
    rate = accepted / proposed
    if draft == "perturbed":  # both paths (accepted drafts and corrections) were taken
        assert 0.0 < rate < 1.0
    if draft == "other":
        assert rate < 0.5


def test_greedy_one_token_prompt_and_end_token(models):
    target, draft = models["target"], models["perturbed"]
    prompt = np.array([[8]], "int32")
    reference = TextGenerator(target, max_new_tokens=NEW)(prompt)["token_ids"]
    decoder = SpeculativeDecoder(target, draft, num_draft_tokens=3, max_new_tokens=NEW)
    np.testing.assert_array_equal(decoder(prompt)["token_ids"], reference)
    # Stop at a token the greedy output reaches mid-way: same output as TextGenerator's
    # (end token kept, then padding), and fewer tokens generated.
    end = int(reference[0, 4])
    first = 1 + int(np.argmax(reference[0, 1:] == end))
    ended = SpeculativeDecoder(target, draft, num_draft_tokens=3, max_new_tokens=NEW, end_token_id=end, pad_token_id=0)
    out = ended(prompt)
    expected = TextGenerator(target, max_new_tokens=NEW, end_token_id=end)(prompt)
    np.testing.assert_array_equal(out["token_ids"], expected["token_ids"])
    assert out["lengths"].tolist() == expected["lengths"].tolist() == [first + 1]
    assert out["stats"].new_tokens == first and (out["token_ids"][0, first + 1:] == 0).all()


def test_sampling_is_seeded_and_a_self_draft_is_always_accepted(models):
    target = models["target"]
    decoder = SpeculativeDecoder(target, models["perturbed"], num_draft_tokens=3, max_new_tokens=NEW, temperature=1.0)
    first, again, other = (decoder(PROMPTS[:1], seed=s)["token_ids"] for s in (5, 5, 6))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    # p / q is 1 up to float rounding (the target verifies a chunk, the draft one token).
    same = SpeculativeDecoder(target, target, num_draft_tokens=3, max_new_tokens=NEW, temperature=1.0)
    assert same(PROMPTS[:1], seed=1)["stats"].acceptance_rate > 0.95


# -- the distribution: a bigram "model" whose next-token distribution is a fixed table ------------


class BigramLM:
    """Next-token logits depend on the previous token only: ``logits = table[token]``; no real cache."""

    is_encoder_decoder = False

    def __init__(self, table, max_length=8):
        self.table = tf.constant(table, tf.float32)
        self.vocab_size, self.max_length = table.shape[0], max_length

    def build_cache(self, batch_size, cache_length=None):
        return (tf.zeros([batch_size]),)

    def call_with_cache(self, token_ids, cache, cache_index):
        return tf.gather(self.table, token_ids), cache


SMALL_VOCAB = 5
TARGET_TABLE = np.log(np.array([
    [0.40, 0.25, 0.15, 0.12, 0.08],
    [0.10, 0.20, 0.30, 0.25, 0.15],
    [0.30, 0.10, 0.10, 0.20, 0.30],
    [0.15, 0.35, 0.15, 0.15, 0.20],
    [0.20, 0.20, 0.20, 0.20, 0.20],
]))
# A draft that is right about some rows and wrong about others (ratios p/q above and below 1).
DRAFT_TABLE = np.log(np.array([
    [0.10, 0.15, 0.30, 0.25, 0.20],
    [0.10, 0.20, 0.30, 0.25, 0.15],
    [0.05, 0.40, 0.30, 0.05, 0.20],
    [0.50, 0.10, 0.10, 0.10, 0.20],
    [0.60, 0.10, 0.10, 0.10, 0.10],
]))


def filtered(logits, temperature, top_p):
    """NumPy reference of the sampling distribution: softmax(logits / T), then TopPSampler's nucleus."""
    p = np.exp(logits / temperature)
    p /= p.sum(-1, keepdims=True)
    order = np.argsort(-p, axis=-1, kind="stable")
    sorted_p = np.take_along_axis(p, order, -1)
    before = np.cumsum(sorted_p, -1) - sorted_p
    kept = np.zeros_like(p)
    np.put_along_axis(kept, order, np.where(before < top_p, sorted_p, 0.0), -1)
    return kept / kept.sum(-1, keepdims=True)


def joint_of_first_two(table, temperature, top_p, start=0):
    """``P(t1, t2)`` under a bigram table, as a (vocab * vocab,) vector."""
    p = filtered(table, temperature, top_p)
    return (p[start][:, None] * p).reshape(-1)


def sample_first_two(decoder, samples, seed_offset=0):
    counts = np.zeros(SMALL_VOCAB * SMALL_VOCAB)
    for seed in range(seed_offset, seed_offset + samples):
        t1, t2 = decoder(np.array([[0]]), seed=seed)["token_ids"][0, 1:3]
        counts[t1 * SMALL_VOCAB + t2] += 1
    return counts


@pytest.mark.parametrize("temperature,top_p,k,samples", [(1.0, 1.0, 3, 4000), (0.7, 0.75, 2, 3000)])
def test_sampling_follows_the_target_distribution(temperature, top_p, k, samples):
    target, draft = BigramLM(TARGET_TABLE), BigramLM(DRAFT_TABLE)
    decoder = SpeculativeDecoder(target, draft, num_draft_tokens=k, max_new_tokens=2, temperature=temperature,
                                 top_p=top_p)
    counts = sample_first_two(decoder, samples)
    expected = joint_of_first_two(TARGET_TABLE, temperature, top_p)
    support = expected > 0
    assert counts[~support].sum() == 0, "sampled a pair outside the target's nucleus"
    _, p_value = stats.chisquare(counts[support], samples * expected[support])
    total_variation = 0.5 * np.abs(counts / samples - expected).sum()
    assert p_value > 1e-3 and total_variation < 0.05, (p_value, total_variation)
    # The test can fail: the draft's own distribution is far from the target's.
    draft_alone = SpeculativeDecoder(draft, draft, num_draft_tokens=k, max_new_tokens=2, temperature=temperature,
                                     top_p=top_p)
    draft_counts = sample_first_two(draft_alone, samples // 2)
    assert 0.5 * np.abs(draft_counts / (samples // 2) - expected).sum() > 0.2
    if draft_counts[~support].sum() == 0:  # else it already fails the support check above
        _, draft_p_value = stats.chisquare(draft_counts[support], (samples // 2) * expected[support])
        assert draft_p_value < 1e-6


def test_sampling_first_token_of_a_real_lm(models):
    """The first token after a prompt, sampled with the transformer pair, against the target's softmax."""
    target, draft = models["target"], models["other"]
    prompt = PROMPTS[:1]
    temperature, samples = 2.0, 1500  # a flatter distribution: more cells to check
    expected = filtered(keras.ops.convert_to_numpy(target(prompt))[0, -1].astype("float64"), temperature, 1.0)
    decoder = SpeculativeDecoder(target, draft, num_draft_tokens=2, max_new_tokens=1, temperature=temperature)
    counts = np.bincount([decoder(prompt, seed=s)["token_ids"][0, 4] for s in range(samples)], minlength=VOCAB)
    # Pool the rare tokens into one cell so every expected count is >= 5.
    common = samples * expected >= 5
    observed = np.append(counts[common], counts[~common].sum())
    wanted = samples * np.append(expected[common], expected[~common].sum())
    _, p_value = stats.chisquare(observed[wanted > 0], wanted[wanted > 0])
    assert p_value > 1e-3, p_value


def test_sampling_stops_at_the_end_token():
    target, draft = BigramLM(TARGET_TABLE, max_length=16), BigramLM(DRAFT_TABLE, max_length=16)
    decoder = SpeculativeDecoder(target, draft, num_draft_tokens=3, max_new_tokens=12, temperature=1.0,
                                 end_token_id=4, pad_token_id=0)
    stopped = 0
    for seed in range(30):
        out = decoder(np.array([[0]]), seed=seed)
        generated = out["token_ids"][0, 1:out["lengths"][0]]
        assert out["stats"].new_tokens == len(generated)
        assert (generated[:-1] != 4).all() and (out["token_ids"][0, out["lengths"][0]:] == 0).all()
        stopped += generated[-1] == 4
    assert stopped > 20  # P(no token 4 in 12 draws) is small under this table


# -- bad inputs -----------------------------------------------------------------------------


def test_bad_arguments_raise_clear_errors(models):
    target, draft = models["target"], models["other"]
    with pytest.raises(ValueError, match="num_draft_tokens must be a positive integer"):
        SpeculativeDecoder(target, draft, num_draft_tokens=0)
    with pytest.raises(ValueError, match="num_draft_tokens must be a positive integer"):
        SpeculativeDecoder(target, draft, num_draft_tokens=2.5)
    with pytest.raises(ValueError, match="verifies num_draft_tokens \\+ 1 positions"):
        SpeculativeDecoder(target, draft, num_draft_tokens=MAX_LENGTH, max_new_tokens=4)
    other_vocab = TransformerCausalLM(VOCAB + 1, MAX_LENGTH)
    with pytest.raises(ValueError, match="share one vocabulary.*50 \\(target\\) and 51 \\(draft\\)"):
        SpeculativeDecoder(target, other_vocab)
    with pytest.raises(ValueError, match="decoder-only.*encoder-decoder"):
        SpeculativeDecoder(target, Transformer(VOCAB, VOCAB, MAX_LENGTH))
    with pytest.raises(ValueError, match="no room for a prompt"):
        SpeculativeDecoder(target, draft, max_new_tokens=MAX_LENGTH)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        SpeculativeDecoder(target, draft, max_new_tokens=NEW, temperature=-1.0)
    with pytest.raises(ValueError, match="top_p must be in \\(0, 1\\]"):
        SpeculativeDecoder(target, draft, max_new_tokens=NEW, temperature=1.0, top_p=0.0)
    with pytest.raises(ValueError, match="end_token_id must be in \\[0, 50\\)"):
        SpeculativeDecoder(target, draft, max_new_tokens=NEW, end_token_id=VOCAB)


def test_bad_prompts_raise_clear_errors(models):
    decoder = SpeculativeDecoder(models["target"], models["other"], num_draft_tokens=2, max_new_tokens=NEW)
    with pytest.raises(ValueError, match="batch size 1.*got a batch of 3"):
        decoder(PROMPTS)
    with pytest.raises(ValueError, match="shape \\(1, prompt_length\\)"):
        decoder(PROMPTS[0])
    with pytest.raises(ValueError, match="shape \\(1, prompt_length\\)"):
        decoder(PROMPTS[:1].astype("float32"))
    with pytest.raises(ValueError, match="prompts must have 1 to 4 tokens"):
        decoder(np.ones((1, 5), "int32"))
    with pytest.raises(ValueError, match="prompts must have 1 to 4 tokens"):
        decoder(np.ones((1, 0), "int32"))
    with pytest.raises(ValueError, match="prompt_ids must be in \\[0, 50\\)"):
        decoder(np.array([[1, VOCAB]]))


def test_xla_by_default_for_greedy_only(models):
    """The sampling loop recompiles under XLA on every call (see the jit_compile docstring): a plain graph."""
    target, draft = models["target"], models["other"]
    assert SpeculativeDecoder(target, draft, max_new_tokens=NEW).jit_compile
    assert not SpeculativeDecoder(target, draft, max_new_tokens=NEW, temperature=0.8).jit_compile
    assert SpeculativeDecoder(target, draft, max_new_tokens=NEW, temperature=0.8, jit_compile=True).jit_compile
