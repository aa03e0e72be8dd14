import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from layers.generation import TextGenerator, generate
from layers.samplers import (
    BeamSampler,
    GreedySampler,
    RandomSampler,
    TopKSampler,
    TopPSampler,
    get_sampler,
)
from layers.transformer_models import Transformer, TransformerCausalLM

VOCAB, MAX_LENGTH = 40, 24
PROMPTS = np.array([[5, 6, 7, 8], [9, 10, 0, 0], [11, 0, 0, 0]], "int32")
LENGTHS = np.array([4, 2, 1], "int32")
SOURCE = np.array([[4, 5, 6, 7, 8], [9, 10, 11, 0, 0], [12, 13, 0, 0, 0]], "int32")
SOURCE_PAD = SOURCE > 0


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.fixture(scope="module")
def lm():
    keras.utils.set_random_seed(3)
    model = TransformerCausalLM(VOCAB, MAX_LENGTH, num_layers=2, hidden_dim=32, num_heads=2)
    # Build here: weights are drawn at build time, and the autouse per-test seed
    # (conftest) would otherwise decide them, differently for every test subset.
    model(np.zeros((1, MAX_LENGTH), "int32"))
    return model


@pytest.fixture(scope="module")
def seq2seq():
    keras.utils.set_random_seed(4)
    # Pre-LN keeps this tiny random model's output visibly dependent on the
    # source (checked below), so a broken encoder path would show.
    model = Transformer(20, VOCAB, MAX_LENGTH, hidden_dim=32, num_heads=2, normalize_first=True,
                        position_encoding="learned")
    model((SOURCE, np.zeros((3, MAX_LENGTH), "int32")), encoder_padding_mask=SOURCE_PAD)
    return model


_FORWARD = {}


def full_logits(model, tokens, source=None, source_pad=None):
    """Last-position log-probs from a plain forward pass over the whole sequence (no cache).

    The sequence is right-padded to the model's max_length so one traced
    function serves every length: with a causal decoder the logits at the last
    real position do not depend on the padding after it.
    """
    if id(model) not in _FORWARD:
        if source is None:
            _FORWARD[id(model)] = tf.function(lambda t: model(t))
        else:
            _FORWARD[id(model)] = tf.function(lambda t, s, m: model([s, t], encoder_padding_mask=m))
    padded = np.zeros((1, model.max_length), "int32")
    padded[0, : len(tokens)] = tokens
    if source is None:
        logits = _FORWARD[id(model)](padded)
    else:
        logits = _FORWARD[id(model)](padded, np.asarray([source]), np.asarray([source_pad]))
    return log_softmax(to_np(logits)[0, len(tokens) - 1].astype("float64"))


def reference_greedy(model, prompt, max_new_tokens, end_token_id=None, source=None, source_pad=None):
    """Greedy decoding written as the textbook loop: recompute everything, take the argmax."""
    tokens = list(prompt)
    for _ in range(max_new_tokens):
        tokens.append(int(np.argmax(full_logits(model, tokens, source, source_pad))))
        if tokens[-1] == end_token_id:
            break
    return tokens


def rows(out):
    """Each row of a generator output cut to its length, as lists."""
    return [list(t[:n]) for t, n in zip(out["token_ids"], out["lengths"])]


# --- samplers ---------------------------------------------------------------------------


LOGITS = np.log(np.array([0.4, 0.25, 0.15, 0.1, 0.06, 0.04]))


def _frequencies(sampler, n=20000, seed=(1, 2)):
    logits = tf.constant(np.tile(LOGITS, (n, 1)), tf.float32)
    tokens = to_np(sampler.next_token(logits, tf.constant(seed, tf.int32)))
    return np.bincount(tokens, minlength=len(LOGITS)) / n


def _assert_distribution(freq, probs, n=20000):
    sigma = np.sqrt(probs * (1 - probs) / n) + 1e-12
    assert np.all(np.abs(freq - probs) <= 4.5 * sigma + 1e-9), (freq, probs)


def test_greedy_sampler_takes_the_argmax():
    logits = tf.constant([[0.1, 2.0, -1.0], [3.0, 0.0, 2.9]])
    np.testing.assert_array_equal(to_np(GreedySampler().next_token(logits)), [1, 0])


def test_random_sampler_follows_softmax_with_temperature():
    probs = np.exp(LOGITS / 0.7) / np.exp(LOGITS / 0.7).sum()
    _assert_distribution(_frequencies(RandomSampler(temperature=0.7)), probs)


def test_top_k_sampler_samples_only_the_k_best_in_proportion():
    probs = np.exp(LOGITS)
    probs[3:] = 0
    _assert_distribution(_frequencies(TopKSampler(k=3)), probs / probs.sum())


def test_top_p_sampler_samples_the_nucleus_in_proportion():
    # Cumulative mass 0.4, 0.65, 0.8, ...: p=0.7 keeps the three tokens that first reach 0.7.
    probs = np.exp(LOGITS)
    probs[3:] = 0
    _assert_distribution(_frequencies(TopPSampler(p=0.7)), probs / probs.sum())
    _assert_distribution(_frequencies(TopPSampler(p=1.0)), np.exp(LOGITS))


def test_seeded_sampling_is_reproducible():
    sampler = TopKSampler(k=4)
    np.testing.assert_array_equal(_frequencies(sampler, 500, (5, 1)), _frequencies(sampler, 500, (5, 1)))
    assert not np.array_equal(_frequencies(sampler, 500, (5, 1)), _frequencies(sampler, 500, (6, 1)))


def test_sampler_arguments_are_checked():
    for p in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"p must be in \(0, 1\]"):
            TopPSampler(p=p)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        RandomSampler(temperature=0.0)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        TopKSampler(k=0)
    with pytest.raises(ValueError, match="unknown sampler"):
        get_sampler("nucleus")


# --- greedy: KV-cache equals recomputation ------------------------------------------------


@pytest.fixture(scope="module")
def greedy_cached(lm):
    return TextGenerator(lm, max_new_tokens=8, jit_compile=False)(PROMPTS, LENGTHS)


def test_cached_greedy_equals_uncached_and_the_reference_loop(lm, greedy_cached):
    uncached = TextGenerator(lm, max_new_tokens=8, use_cache=False, jit_compile=False)(PROMPTS, LENGTHS)
    np.testing.assert_array_equal(greedy_cached["token_ids"], uncached["token_ids"])
    np.testing.assert_array_equal(greedy_cached["lengths"], LENGTHS + 8)
    expected = [reference_greedy(lm, p[:n], 8) for p, n in zip(PROMPTS, LENGTHS)]
    assert rows(greedy_cached) == expected
    # Right padding: after its own 8 new tokens a row is filled with pad ids.
    assert np.all(greedy_cached["token_ids"][2, 1 + 8 :] == 0)


def test_xla_compiled_loop_gives_the_same_tokens(lm, greedy_cached):
    xla = TextGenerator(lm, max_new_tokens=8, jit_compile=True)(PROMPTS, LENGTHS)
    np.testing.assert_array_equal(xla["token_ids"], greedy_cached["token_ids"])


def test_end_token_stops_each_row_and_pads_after_it(lm, greedy_cached):
    free = rows(greedy_cached)
    end = free[0][4 + 2]  # the third token row 0 generates
    out = TextGenerator(lm, max_new_tokens=8, end_token_id=end, jit_compile=False)(PROMPTS, LENGTHS)
    for row, length, prompt, n in zip(rows(out), out["lengths"], PROMPTS, LENGTHS):
        assert row == reference_greedy(lm, prompt[:n], 8, end_token_id=end)
    stop = 4 + free[0][4:].index(end) + 1  # just after the first generated end token
    assert out["lengths"][0] == stop and out["token_ids"][0, stop - 1] == end
    assert np.all(out["token_ids"][0, stop:] == 0)


def test_encoder_decoder_cached_greedy_equals_uncached_and_reference(seq2seq):
    start = np.ones((3, 1), "int32")
    kwargs = dict(encoder_inputs={"encoder_inputs": SOURCE, "encoder_padding_mask": SOURCE_PAD})
    cached = TextGenerator(seq2seq, max_new_tokens=6, jit_compile=False)(start, **kwargs)
    uncached = TextGenerator(seq2seq, max_new_tokens=6, use_cache=False, jit_compile=False)(start, **kwargs)
    np.testing.assert_array_equal(cached["token_ids"], uncached["token_ids"])
    expected = [reference_greedy(seq2seq, [1], 6, source=s, source_pad=m) for s, m in zip(SOURCE, SOURCE_PAD)]
    assert rows(cached) == expected
    assert len({tuple(r) for r in expected}) > 1, "the source should change the output"


# --- seeded sampling --------------------------------------------------------------------


@pytest.mark.parametrize(
    "sampler", [RandomSampler(temperature=1.5), TopKSampler(k=5), TopPSampler(p=0.8)], ids=["random", "top_k", "top_p"]
)
def test_seeded_generation_is_reproducible_and_cache_independent(lm, sampler):
    generator = TextGenerator(lm, sampler=sampler, max_new_tokens=8, jit_compile=False)
    first = generator(PROMPTS, LENGTHS, seed=11)
    np.testing.assert_array_equal(first["token_ids"], generator(PROMPTS, LENGTHS, seed=11)["token_ids"])
    assert not np.array_equal(first["token_ids"], generator(PROMPTS, LENGTHS, seed=12)["token_ids"])
    for row, prompt, n in zip(first["token_ids"], PROMPTS, LENGTHS):
        np.testing.assert_array_equal(row[:n], prompt[:n])
    if isinstance(sampler, TopPSampler):  # the same noise on the same logits: the cache changes nothing
        uncached = TextGenerator(lm, sampler=sampler, max_new_tokens=8, use_cache=False, jit_compile=False)
        np.testing.assert_array_equal(first["token_ids"], uncached(PROMPTS, LENGTHS, seed=11)["token_ids"])


# --- beam search ------------------------------------------------------------------------


def reference_beam_search(model, prompt, num_beams, max_new_tokens, end_token_id, length_penalty, vocab):
    """The BeamSampler algorithm in plain Python over full forward passes."""
    beams = [(list(prompt), 0.0, False, 0)]  # tokens, log p, finished, generated
    for _ in range(max_new_tokens):
        candidates = []
        for tokens, score, finished, n in beams:
            if finished:
                candidates.append((tokens + [0], score, True, n))
                continue
            log_p = full_logits(model, tokens)
            for v in range(vocab):
                done = v == end_token_id or n + 1 == max_new_tokens
                candidates.append((tokens + [v], score + log_p[v], done, n + 1))
        beams = sorted(candidates, key=lambda c: -c[1])[:num_beams]
        if all(b[2] for b in beams):
            break
    best = max(beams, key=lambda b: b[1] / max(b[3], 1) ** length_penalty)
    return best[0][: len(prompt) + best[3]], best[1] / max(best[3], 1) ** length_penalty


@pytest.fixture(scope="module")
def small_vocab_lm():
    keras.utils.set_random_seed(6)
    # Seeded so that beams differ from greedy and the length penalty changes the pick
    # (built here so that this seed, not the per-test one, draws the weights).
    model = TransformerCausalLM(6, 12, num_layers=1, hidden_dim=16, num_heads=2)
    model(np.zeros((1, 12), "int32"))
    return model


def test_beam_search_with_one_beam_is_greedy(lm, greedy_cached):
    beam = TextGenerator(lm, sampler=BeamSampler(num_beams=1), max_new_tokens=8, jit_compile=False)(PROMPTS, LENGTHS)
    np.testing.assert_array_equal(beam["token_ids"], greedy_cached["token_ids"])


def test_beam_search_with_enough_beams_is_exhaustive_search(small_vocab_lm):
    prompt, new = [3, 4], 3
    out = TextGenerator(small_vocab_lm, sampler=BeamSampler(num_beams=6**new), max_new_tokens=new, jit_compile=False)(
        np.array([prompt])
    )
    every = np.array([prompt + list(s) for s in itertools.product(range(6), repeat=new)], "int32")
    log_p = log_softmax(to_np(small_vocab_lm(every)).astype("float64"))
    joint = sum(log_p[np.arange(len(every)), len(prompt) - 1 + i, every[:, len(prompt) + i]] for i in range(new))
    np.testing.assert_array_equal(out["token_ids"][0], every[np.argmax(joint)])
    np.testing.assert_allclose(out["scores"][0], joint.max() / new, atol=1e-4)


def test_beam_search_matches_reference_with_end_token_and_batch_of_lengths(small_vocab_lm):
    prompts = np.array([[3, 4, 1], [2, 0, 0]], "int32")
    lengths = np.array([3, 1], "int32")
    chosen_lengths = {}
    for length_penalty in (0.0, 1.0):
        sampler = BeamSampler(num_beams=3, length_penalty=length_penalty)
        out = TextGenerator(small_vocab_lm, sampler=sampler, max_new_tokens=5, end_token_id=5, jit_compile=False)(
            prompts, lengths
        )
        for row, score, prompt, n in zip(rows(out), out["scores"], prompts, lengths):
            ref_tokens, ref_score = reference_beam_search(small_vocab_lm, prompt[:n], 3, 5, 5, length_penalty, 6)
            assert row == ref_tokens
            np.testing.assert_allclose(score, ref_score, atol=1e-4)
        chosen_lengths[length_penalty] = out["lengths"]
    # Raw log-probabilities favour short endings; normalising by length picks longer ones.
    assert np.all(chosen_lengths[1.0] >= chosen_lengths[0.0])
    assert np.any(chosen_lengths[1.0] > chosen_lengths[0.0])


def test_beam_search_cache_equals_recomputation_for_both_models(lm, seq2seq):
    sampler = BeamSampler(num_beams=3)
    for use_cache in (True, False):
        out = TextGenerator(lm, sampler=sampler, max_new_tokens=5, use_cache=use_cache, jit_compile=False)(
            PROMPTS, LENGTHS
        )
        if use_cache:
            cached = out
    np.testing.assert_array_equal(cached["token_ids"], out["token_ids"])
    np.testing.assert_allclose(cached["scores"], out["scores"], atol=1e-5)
    start = np.ones((3, 1), "int32")
    kwargs = dict(encoder_inputs={"encoder_inputs": SOURCE, "encoder_padding_mask": SOURCE_PAD})
    a = TextGenerator(seq2seq, sampler=sampler, max_new_tokens=5, jit_compile=False)(start, **kwargs)
    b = TextGenerator(seq2seq, sampler=sampler, max_new_tokens=5, use_cache=False, jit_compile=False)(start, **kwargs)
    np.testing.assert_array_equal(a["token_ids"], b["token_ids"])


# --- errors -------------------------------------------------------------------------------


def test_max_new_tokens_beyond_the_cache_is_rejected(lm):
    with pytest.raises(ValueError, match="beyond the cache size 24"):
        TextGenerator(lm, max_new_tokens=30)
    generator = TextGenerator(lm, max_new_tokens=20, jit_compile=False)
    expected = r"max_new_tokens=20 after a prompt of 8 tokens needs 28 positions, beyond the cache size 24"
    with pytest.raises(ValueError, match=expected):
        generator(np.ones((1, 8), "int32"))
    with pytest.raises(ValueError, match="longer than the model's 24 learned positions"):
        TextGenerator(lm, cache_length=32)


def test_generator_rejects_bad_prompts_and_options(lm, seq2seq):
    generator = TextGenerator(lm, max_new_tokens=4, jit_compile=False)
    with pytest.raises(ValueError, match=r"rank 2 \(batch, prompt_length\)"):
        generator(np.ones((4,), "int32"))
    with pytest.raises(ValueError, match=r"values in \[1, 4\]"):
        generator(PROMPTS, [4, 0, 1])
    with pytest.raises(ValueError, match="needs encoder_inputs"):
        TextGenerator(seq2seq, max_new_tokens=4, jit_compile=False)(np.ones((1, 1), "int32"))
    with pytest.raises(ValueError, match=r"p must be in \(0, 1\]"):
        generate(lm, PROMPTS, sampler=TopPSampler(p=2.0))


# --- one graph for every beam size, the loop cut open, limits, repetition block ----------------


def test_beam_count_as_a_tensor_gives_each_beam_searchs_tokens_from_one_graph(lm):
    fixed = {b: TextGenerator(lm, sampler=BeamSampler(b), max_new_tokens=6, jit_compile=False)(PROMPTS, LENGTHS)
             for b in (1, 2, 3)}  # fmt: skip
    shared = TextGenerator(lm, sampler=BeamSampler(4), max_new_tokens=6, jit_compile=False)
    for beams, expected in fixed.items():
        out = shared(PROMPTS, LENGTHS, num_beams=beams)
        np.testing.assert_array_equal(out["token_ids"], expected["token_ids"])
        np.testing.assert_allclose(out["scores"], expected["scores"], atol=1e-5)
    assert len(shared._compiled._list_all_concrete_functions()) == 1  # traced once for all beam counts
    greedy = TextGenerator(lm, max_new_tokens=6, jit_compile=False)(PROMPTS, LENGTHS)
    np.testing.assert_array_equal(fixed[1]["token_ids"], greedy["token_ids"])  # one beam is greedy search


def test_start_step_finish_driven_by_hand_equal_generate_step(seq2seq):
    generator = TextGenerator(seq2seq, sampler=BeamSampler(2), max_new_tokens=5, jit_compile=False)
    start = tf.ones((3, 1), tf.int32)
    inputs = {"encoder_inputs": tf.constant(SOURCE), "encoder_padding_mask": tf.constant(SOURCE_PAD)}
    whole = generator.generate_step(start, tf.ones([3], tf.int32), encoder_inputs=inputs)
    state = generator.start(start, tf.ones([3], tf.int32), encoder_inputs=inputs)
    steps = 0
    while bool(generator.running(state)):
        state = generator.step(state)
        steps += 1
        partial, _ = generator.best_so_far(state)
        assert partial.shape == (3, 6)
    out = generator.finish(state)
    assert 1 <= steps <= 5
    for key in ("token_ids", "lengths", "scores"):
        np.testing.assert_allclose(to_np(out[key]), to_np(whole[key]), atol=1e-6)


def test_per_prompt_output_limits(lm):
    generator = TextGenerator(lm, max_new_tokens=8, jit_compile=False)
    free = generator(PROMPTS, LENGTHS)
    limited = generator(PROMPTS, LENGTHS, max_new_tokens=[2, 8, 5])
    assert list(limited["lengths"] - LENGTHS) == [2, 8, 5]
    for row, limit in enumerate([2, 8, 5]):
        end = LENGTHS[row] + limit
        np.testing.assert_array_equal(limited["token_ids"][row, :end], free["token_ids"][row, :end])
        assert not limited["token_ids"][row, end:].any()
    with pytest.raises(ValueError, match=r"max_new_tokens must be an int or \(3,\) ints in \[1, 8\]"):
        generator(PROMPTS, LENGTHS, max_new_tokens=[2, 9, 1])


def _repeats(tokens, n):
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) - len(set(grams))


@pytest.mark.parametrize("sampler", ["greedy", BeamSampler(3)], ids=["greedy", "beam"])
def test_no_repeat_ngram_block_removes_every_repeated_ngram(sampler):
    keras.utils.set_random_seed(8)
    # A tiny random LM loops quickly: without the block, greedy output repeats n-grams.
    # At most 16 tokens over a vocabulary of 16: a token has occurred at most 15 times before,
    # so at least one successor is always free and the block can always be honoured (with a
    # smaller vocabulary, a long enough output must repeat a bigram whatever the generator does).
    lm = TransformerCausalLM(16, 40, num_layers=1, hidden_dim=8, num_heads=2)
    prompts, lengths = np.array([[1, 2, 0], [3, 0, 0]], "int32"), np.array([2, 1], "int32")
    free = TextGenerator(lm, sampler=sampler, max_new_tokens=14, jit_compile=False)(prompts, lengths)
    blocked = TextGenerator(lm, sampler=sampler, max_new_tokens=14, jit_compile=False, no_repeat_ngram_size=2)(
        prompts, lengths
    )
    assert sum(_repeats(list(r), 2) for r in rows(free)) > 0, "the test needs a model that loops"
    for row in rows(blocked):
        assert _repeats(row, 2) == 0, row
    with pytest.raises(ValueError, match="no_repeat_ngram_size must be an integer >= 0"):
        TextGenerator(lm, no_repeat_ngram_size=-1)


@pytest.mark.parametrize("sampler", ["greedy", BeamSampler(3)], ids=["greedy", "beam"])
def test_dropping_finished_prompts_gives_the_same_tokens(seq2seq, lm, sampler):
    """compact=True drops a prompt's rows once all its beams are done: outputs must not change."""
    # End on a token the random models emit early for some rows, late or never for others.
    for model, kwargs, prompts, lengths in (
        (lm, {}, PROMPTS, LENGTHS),
        (seq2seq, {"encoder_inputs": {"encoder_inputs": SOURCE, "encoder_padding_mask": SOURCE_PAD}},
         np.ones((3, 1), "int32"), None),
    ):  # fmt: skip
        free = TextGenerator(model, sampler=sampler, max_new_tokens=10, jit_compile=False, compact=False)(
            prompts, lengths, **kwargs
        )
        first = {int(t) for t in free["token_ids"][:, -10:].ravel()}
        ends = [t for t in range(VOCAB) if t in first]
        checked = 0
        for end in ends[:6]:
            a = TextGenerator(model, sampler=sampler, max_new_tokens=10, end_token_id=end, jit_compile=False,
                              compact=False)(prompts, lengths, **kwargs)  # fmt: skip
            b = TextGenerator(model, sampler=sampler, max_new_tokens=10, end_token_id=end, jit_compile=False,
                              compact=True)(prompts, lengths, **kwargs)  # fmt: skip
            for key in a:
                np.testing.assert_allclose(a[key], b[key], atol=1e-5, err_msg=f"{key}, end {end}")
            checked += len(set((a["lengths"]).tolist())) > 1  # prompts that finish at different steps
        assert checked, "no end token made the prompts finish at different steps"
    with pytest.raises(ValueError, match="compact=True needs jit_compile=False"):
        TextGenerator(lm, max_new_tokens=8, jit_compile=True, compact=True)
