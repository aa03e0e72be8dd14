import keras
import keras_hub
import numpy as np
import pytest

from layers.transformer_models import Transformer, TransformerCausalLM, copy_gpt2_weights
from tests.layer_harness import run_layer_contract

VOCAB, LENGTH = 40, 16
RNG = np.random.default_rng(0)
TOKENS = RNG.integers(1, VOCAB, (2, 7)).astype("int32")
SOURCE = RNG.integers(1, 30, (2, 9)).astype("int32")
SOURCE_PAD = np.array([[True] * 9, [True] * 6 + [False] * 3])


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def _gpt2_pair():
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCAB, num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64,
        max_sequence_length=LENGTH,
    )
    theirs = keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)
    ours = TransformerCausalLM(VOCAB, LENGTH, num_layers=2, hidden_dim=32, num_heads=2, intermediate_dim=64)
    copy_gpt2_weights(backbone, ours)
    return ours, theirs


def test_causal_lm_contract_and_keras_hub_gpt2_parity():
    ours, theirs = _gpt2_pair()

    def make():
        lm = TransformerCausalLM(VOCAB, LENGTH, num_layers=2, hidden_dim=32, num_heads=2, intermediate_dim=64)
        lm.build()
        lm.set_weights(ours.get_weights())
        return lm

    run_layer_contract(
        make,
        TOKENS,
        expected_output_shape=(2, 7, VOCAB),
        reference=lambda ids: to_np(theirs({"token_ids": ids, "padding_mask": np.ones_like(ids, bool)})),
        atol=2e-5,
    )


def test_causal_lm_cache_matches_keras_hub_call_with_cache():
    ours, theirs = _gpt2_pair()
    cache = ours.build_cache(2, LENGTH)
    logits, cache = ours.call_with_cache(TOKENS[:, :4], cache, 0)
    their_cache = keras.ops.zeros((2, 2, 2, LENGTH, 2, 16))
    their_logits, _, their_cache = theirs.call_with_cache(TOKENS[:, :4], their_cache, 0)
    np.testing.assert_allclose(to_np(logits), to_np(their_logits), atol=2e-5)
    logits, _ = ours.call_with_cache(TOKENS[:, 4:5], cache, 4)
    their_logits, _, _ = theirs.call_with_cache(TOKENS[:, 4:5], their_cache, 4)
    np.testing.assert_allclose(to_np(logits), to_np(their_logits), atol=2e-5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"normalize_first": False, "position_encoding": "sinusoidal", "tie_embeddings": False, "activation": "relu"},
    ],
    ids=["gpt2_pre_ln", "post_ln_sinusoidal_untied"],
)
def test_causal_lm_cache_equals_full_forward(kwargs):
    lm = TransformerCausalLM(VOCAB, LENGTH, **kwargs)
    full = to_np(lm(TOKENS))
    cache = lm.build_cache(2)
    logits, cache = lm.call_with_cache(TOKENS[:, :3], cache, 0)
    steps = [to_np(logits)]
    for i in range(3, TOKENS.shape[1]):
        logits, cache = lm.call_with_cache(TOKENS[:, i : i + 1], cache, i)
        steps.append(to_np(logits))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def _np_transformer_reference(model, encoder_layers, decoder_layers, source, target, source_pad):
    """The encoder-decoder forward pass rebuilt from keras_hub layers with copied weights."""
    from keras_hub.layers import SinePositionEncoding

    enc = to_np(model.encoder_embeddings)[source]
    enc = enc + to_np(SinePositionEncoding()(enc))
    for layer in encoder_layers:
        enc = layer(enc, padding_mask=source_pad)
    dec = to_np(model.decoder_embeddings)[target]
    dec = dec + to_np(SinePositionEncoding()(dec))
    for layer in decoder_layers:
        dec = layer(dec, enc, encoder_padding_mask=source_pad)
    return to_np(dec) @ to_np(model.decoder_embeddings).T


def test_transformer_contract_and_keras_hub_layer_parity():
    model = Transformer(30, VOCAB, LENGTH, hidden_dim=32, num_heads=4, intermediate_dim=48)
    model.build()
    encoders, decoders = [], []
    for ours in model.encoder_layers:
        theirs = keras_hub.layers.TransformerEncoder(48, 4)
        theirs.build((None, None, 32))
        encoders.append(theirs)
        theirs._self_attention_layer.set_weights(ours.self_attention.get_weights())
        theirs._self_attention_layer_norm.set_weights(ours.self_attention_layer_norm.get_weights())
        theirs._feedforward_intermediate_dense.set_weights(ours.feedforward.intermediate_dense.get_weights())
        theirs._feedforward_output_dense.set_weights(ours.feedforward.output_dense.get_weights())
        theirs._feedforward_layer_norm.set_weights(ours.feedforward_layer_norm.get_weights())
    for ours in model.decoder_layers:
        theirs = keras_hub.layers.TransformerDecoder(48, 4)
        theirs.build((None, None, 32), (None, None, 32))
        decoders.append(theirs)
        for mine, hub in (
            (ours.self_attention, theirs._self_attention_layer),
            (ours.self_attention_layer_norm, theirs._self_attention_layer_norm),
            (ours.cross_attention, theirs._cross_attention_layer),
            (ours.cross_attention_layer_norm, theirs._cross_attention_layer_norm),
            (ours.feedforward.intermediate_dense, theirs._feedforward_intermediate_dense),
            (ours.feedforward.output_dense, theirs._feedforward_output_dense),
            (ours.feedforward_layer_norm, theirs._feedforward_layer_norm),
        ):
            hub.set_weights(mine.get_weights())

    def make():
        clone = Transformer(30, VOCAB, LENGTH, hidden_dim=32, num_heads=4, intermediate_dim=48)
        clone.build()
        clone.set_weights(model.get_weights())
        return clone

    run_layer_contract(
        make,
        [SOURCE, TOKENS],
        expected_output_shape=(2, 7, VOCAB),
        reference=lambda src, tgt: _np_transformer_reference(model, encoders, decoders, src, tgt, None),
        atol=2e-5,
    )
    np.testing.assert_allclose(
        to_np(model([SOURCE, TOKENS], encoder_padding_mask=SOURCE_PAD)),
        _np_transformer_reference(model, encoders, decoders, SOURCE, TOKENS, SOURCE_PAD),
        atol=2e-5,
    )


@pytest.mark.parametrize("normalize_first", [False, True], ids=["post_ln", "pre_ln"])
def test_transformer_cache_equals_full_forward(normalize_first):
    model = Transformer(30, VOCAB, LENGTH, normalize_first=normalize_first, position_encoding="learned")
    full = to_np(model([SOURCE, TOKENS], encoder_padding_mask=SOURCE_PAD))
    cache = model.build_cache(2, LENGTH, model.encode(SOURCE, SOURCE_PAD))
    steps = []
    for i in range(TOKENS.shape[1]):
        logits, cache = model.call_with_cache(TOKENS[:, i : i + 1], cache, i)
        steps.append(to_np(logits))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_causal_lm_overfits_a_tiny_batch():
    import tensorflow as tf

    lm = TransformerCausalLM(VOCAB, LENGTH)
    x, y = TOKENS[:, :-1], TOKENS[:, 1:]
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = keras.optimizers.Adam(1e-2)
    lm.build()
    optimizer.build(lm.trainable_weights)

    @tf.function  # a bare step traces faster than Keras's fit machinery
    def step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, lm(x, training=True))
        optimizer.apply(tape.gradient(loss, lm.trainable_weights), lm.trainable_weights)
        return loss

    losses = [float(step()) for _ in range(40)]
    assert losses[0] > 3.0 and losses[-1] < 0.1, (losses[0], losses[-1])


def test_models_reject_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="not divisible by num_heads=3.*mismatched head sizes"):
        TransformerCausalLM(VOCAB, LENGTH, hidden_dim=32, num_heads=3)
    with pytest.raises(ValueError, match="position_encoding must be one of"):
        Transformer(30, VOCAB, LENGTH, position_encoding="rotary")
    with pytest.raises(ValueError, match=r"token_ids expected inputs of rank 2"):
        TransformerCausalLM(VOCAB, LENGTH)(np.ones((2, 3, 4), "int32"))
    with pytest.raises(ValueError, match=r"expects inputs \[encoder_inputs, decoder_token_ids\]"):
        Transformer(30, VOCAB, LENGTH)(TOKENS)
    with pytest.raises(ValueError, match="GPT-2 style"):
        copy_gpt2_weights(_gpt2_pair()[1].backbone, TransformerCausalLM(VOCAB, LENGTH, normalize_first=False))


# --- encoders that read images and feature vectors ------------------------------------------


def test_image_encoder_reads_patches_like_a_dense_layer_on_the_reshaped_pixels():
    from layers.transformer_models import image_patches

    keras.utils.set_random_seed(2)
    model = Transformer(None, VOCAB, 24, hidden_dim=16, num_heads=2, encoder_input="image", patch_size=4,
                        position_encoding="learned")  # fmt: skip
    images = np.random.default_rng(0).random((2, 8, 12, 3)).astype("float32")
    patches = to_np(image_patches(images, 4))
    assert patches.shape == (2, 6, 48)
    # Row-major patches: patch (1, 2) is the square at rows 4-7, columns 8-11.
    np.testing.assert_array_equal(patches[0, 1 * 3 + 2], images[0, 4:8, 8:12].reshape(-1))
    encoded, mask = model.encode(images)
    assert encoded.shape == (2, 6, 16) and to_np(mask).all()
    logits = model([images, TOKENS])
    assert logits.shape == (2, TOKENS.shape[1], VOCAB)
    config = model.get_config()
    assert config["encoder_input"] == "image" and config["patch_size"] == 4 and config["encoder_vocab_size"] is None
    clone = Transformer.from_config(config)
    clone.build()
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(to_np(clone([images, TOKENS])), to_np(logits), atol=1e-5)
    with pytest.raises(ValueError, match="multiples of patch_size=4"):
        model.encode(np.zeros((1, 10, 12, 3), "float32"))


def test_feature_encoder_masks_padded_frames():
    keras.utils.set_random_seed(3)
    model = Transformer(None, VOCAB, 24, hidden_dim=16, num_heads=2, encoder_input="features", encoder_feature_dim=5,
                        normalize_first=True, position_encoding="learned")  # fmt: skip
    frames = np.random.default_rng(1).normal(size=(2, 7, 5)).astype("float32")
    mask = np.arange(7)[None] < np.array([[7], [4]])
    logits = to_np(model({"encoder_inputs": frames, "encoder_padding_mask": mask, "decoder_token_ids": TOKENS}))
    changed = frames.copy()
    changed[1, 4:] = 99.0  # padded frames: any value, the same output
    again = to_np(model({"encoder_inputs": changed, "encoder_padding_mask": mask, "decoder_token_ids": TOKENS}))
    np.testing.assert_allclose(logits, again, atol=1e-5)
    with pytest.raises(ValueError, match="needs encoder_feature_dim"):
        Transformer(None, VOCAB, 24, encoder_input="features")
    with pytest.raises(ValueError, match="encoder_input must be one of"):
        Transformer(10, VOCAB, 24, encoder_input="audio")


def test_shared_embeddings_are_one_matrix_for_source_target_and_output():
    model = Transformer(VOCAB, VOCAB, 24, hidden_dim=16, num_heads=2, share_embeddings=True)
    model.build()
    assert model.encoder_embeddings is model.decoder_embeddings
    separate = Transformer(VOCAB, VOCAB, 24, hidden_dim=16, num_heads=2)
    separate.build()
    assert len(separate.trainable_weights) == len(model.trainable_weights) + 1
    with pytest.raises(ValueError, match="share_embeddings needs one vocabulary"):
        Transformer(VOCAB, VOCAB + 1, 24, share_embeddings=True)


def test_hybrid_image_encoder_reads_the_cells_of_a_cnn_feature_map():
    from layers.detr import DETRBackbone

    keras.utils.set_random_seed(4)
    model = Transformer(None, VOCAB, 24, hidden_dim=16, num_heads=2, encoder_input="image", image_backbone=(8, 12),
                        position_encoding="learned", normalize_first=True)  # fmt: skip
    images = np.random.default_rng(0).random((3, 32, 24, 3)).astype("float32")  # an odd batch: see test_convolution
    encoded, _ = model.encode(images)
    assert encoded.shape == (3, 4 * 3, 16)  # output stride 8: a 4 x 3 grid, row-major
    grid = to_np(model.backbone(images, training=False))
    assert isinstance(model.backbone, DETRBackbone) and grid.shape == (3, 4, 3, 12)
    x = to_np(model.encoder_projection(grid.reshape(3, 12, 12)))  # the 12 cells as tokens, then the usual encoder
    x = x + to_np(model.encoder_position(x, start_index=0))
    for layer in model.encoder_layers:
        x = layer(x)
    np.testing.assert_allclose(to_np(encoded), to_np(model.encoder_final_norm(x)), atol=1e-5)
    config = model.get_config()
    assert config["image_backbone"] == [8, 12] and config["patch_size"] is None
    clone = Transformer.from_config(config)
    clone.build()
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(to_np(clone([images, TOKENS[:1].repeat(3, 0)])),
                               to_np(model([images, TOKENS[:1].repeat(3, 0)])), atol=1e-5)
    with pytest.raises(ValueError, match="at least one stage"):
        Transformer(None, VOCAB, 24, encoder_input="image", image_backbone=())
    with pytest.raises(ValueError, match="needs patch_size"):
        Transformer(None, VOCAB, 24, encoder_input="image")
