import dataclasses
import io

import numpy as np
import pytest
import scipy.io.wavfile
import scipy.signal
import tensorflow as tf
import tensorflow_datasets as tfds

from pipelines import tfds_sources
from pipelines.corpora import speech
from pipelines.tfds_sources import (
    CaptioningSource,
    CodeSource,
    DatasetNotPreparedError,
    SpeechSource,
    get_source,
    load_examples,
    resolve_split,
)
from tests.pipelines.corpora_testdata import prepare, write_apt_lists

COMMON_FIELDS = {
    "translation": {"source": tf.string, "target": tf.string},
    "summarization": {"document": tf.string, "summary": tf.string},
    "qa": {"context": tf.string, "question": tf.string, "answer_text": tf.string, "answer_start": tf.int32},
    "code": {"prompt": tf.string, "code": tf.string},
    "captioning": {"image": tf.uint8, "caption": tf.string},
    "speech": {"audio": tf.float32, "transcript": tf.string},
}


def assert_common_fields(ds, app):
    assert {k: v.dtype for k, v in ds.element_spec.items()} == COMMON_FIELDS[app]


def raw(name, split, data_dir=None):
    return list(tfds.as_numpy(tfds.load(name, split=split, data_dir=data_dir, download=False)))


# --------------------------------------------------------------------------- presets, mapping, splits


def test_every_app_defaults_to_its_offline_corpus():
    defaults = {app: get_source(app).dataset for app in tfds_sources.APPS}
    assert defaults == {
        "translation": "tfsuite_translation/en_de",
        "summarization": "tfsuite_summarization",
        "qa": "tfsuite_qa",
        "code": "tfsuite_code",
        "captioning": "tfsuite_captions",
        "speech": "tfsuite_speech",
    }
    # Every preset's name is a TFDS builder this tfds knows.
    registered = set(tfds.list_builders())
    for presets in tfds_sources.PRESETS.values():
        for name in presets:
            assert name.split("/")[0] in registered | set(tfds_sources.CORPORA), name


def test_split_mapping():
    squad = get_source("qa", "squad")
    assert [resolve_split(squad, s) for s in ("train", "validation", "test")] == ["train[:95%]", "train[95%:]", "validation"]
    coco = get_source("captioning", "coco_captions")
    assert resolve_split(coco, "train") == "train+restval" and resolve_split(coco, "validation") == "val"
    libri = get_source("speech", "librispeech")
    assert resolve_split(libri, "test[:10]") == "test_clean[:10]"
    assert resolve_split(libri, "dev_other") == "dev_other"
    assert resolve_split(libri, "validation", {"validation": "dev_other"}) == "dev_other"
    assert resolve_split(get_source("qa"), "train[:8]") == "train[:8]"


def test_bad_app_dataset_and_fields_are_explained():
    with pytest.raises(ValueError, match=r"unknown app 'vision'; choose one of \['translation', "):
        get_source("vision")
    with pytest.raises(ValueError, match=r"no field mapping for dataset 'glue/mrpc' in app 'code'.*fields=\{'prompt': <raw feature>, 'code': <raw feature>\}"):
        get_source("code", "glue/mrpc")
    with pytest.raises(ValueError, match=r"fields \['answer'\] are not common fields of app 'qa'"):
        get_source("qa", "squad", fields={"answer": "answers/text"})
    with pytest.raises(ValueError, match="app 'qa' takes a QASource, got a CodeSource"):
        get_source("qa", CodeSource())
    with pytest.raises(TypeError, match="dataset must be a name, a QASource or None, got int"):
        get_source("qa", 42)
    with pytest.raises(ValueError, match=r"unknown dataset 'no_such_dataset': TFDS has no builder of that name"):
        load_examples("code", "no_such_dataset", fields={"prompt": "a", "code": "b"})
    with pytest.raises(ValueError, match=r"dataset 'cnn_dailymail' has no feature 'body' \(for code\); its features are \['article', 'highlights', 'id', 'publisher'\]"):
        load_examples("code", "cnn_dailymail", fields={"prompt": "highlights", "code": "body"})


def test_missing_data_says_how_to_get_it(tmp_path, small_corpora):
    with pytest.raises(DatasetNotPreparedError, match=r"'tfsuite_translation/en_de' is not prepared in .*`tfsuite data build tfsuite_translation`"):
        load_examples("translation", data_dir=tmp_path)
    with pytest.raises(DatasetNotPreparedError, match=r"'squad' is not prepared .*public dataset .*download=True.*this one has none"):
        load_examples("qa", "squad", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"split 'dev' of 'tfsuite_qa' maps to 'dev', which the dataset does not have \(its splits: \['test', 'train', 'validation'\]\)"):
        load_examples("qa", split="dev", data_dir=small_corpora("tfsuite_qa"))


# --------------------------------------------------------------------------- real TFDS names, mocked


def test_wmt14_and_cnn_dailymail_map_to_common_fields():
    with tfds.testing.mock_data(num_examples=3):
        ds = load_examples("translation", "wmt14_translate/de-en", split="test")
        assert_common_fields(ds, "translation")
        got, want = list(tfds.as_numpy(ds)), raw("wmt14_translate/de-en", "test")
        assert [(g["source"], g["target"]) for g in got] == [(w["en"], w["de"]) for w in want]

        ds = load_examples("summarization", "cnn_dailymail", split="validation")
        assert_common_fields(ds, "summarization")
        got, want = list(tfds.as_numpy(ds)), raw("cnn_dailymail", "validation")
        assert [(g["document"], g["summary"]) for g in got] == [(w["article"], w["highlights"]) for w in want]


@pytest.mark.parametrize("name", ["squad", "squad/v2.0"])
def test_squad_takes_the_first_answer(name):
    with tfds.testing.mock_data(num_examples=4):
        ds = load_examples("qa", name, split="test")
        assert_common_fields(ds, "qa")
        got, want = list(tfds.as_numpy(ds)), raw(name, "validation")
    assert len(got) == len(want) == 4
    for g, w in zip(got, want):
        assert (g["context"], g["question"]) == (w["context"], w["question"])
        texts, starts = w["answers"]["text"], w["answers"]["answer_start"]
        assert g["answer_text"] == (texts[0] if len(texts) else b"")
        assert g["answer_start"] == (starts[0] if len(starts) else -1)


def test_coco_captions_first_or_all_captions():
    with tfds.testing.mock_data(num_examples=3):
        first = list(tfds.as_numpy(load_examples("captioning", "coco_captions", split="validation")))
        every = list(tfds.as_numpy(load_examples("captioning", CaptioningSource(dataset="coco_captions", caption="captions/text", all_captions=True))))
        want = raw("coco_captions", "val")
    with_captions = [w for w in want if len(w["captions"]["text"])]
    assert len(first) == len(with_captions)
    for g, w in zip(first, with_captions):
        assert g["image"].dtype == np.uint8 and g["image"].shape[-1] == 3
        np.testing.assert_array_equal(g["image"], w["image"])
        assert g["caption"] == w["captions"]["text"][0]
    assert [e["caption"] for e in every] == [c for w in want for c in w["captions"]["text"]]
    assert sum(len(w["captions"]["text"]) for w in want) > len(want)


def test_librispeech_scales_int16_and_normalizes_the_transcript():
    with tfds.testing.mock_data(num_examples=3):
        ds = load_examples("speech", "librispeech", split="validation")
        assert_common_fields(ds, "speech")
        got, want = list(tfds.as_numpy(ds)), raw("librispeech", "dev_clean")
    for g, w in zip(got, want):
        np.testing.assert_allclose(g["audio"], w["speech"] / 32768.0, atol=1e-7)
        assert np.abs(g["audio"]).max() <= 1.0
        assert g["transcript"].decode() == speech.normalize_transcript(w["text"].decode())


def test_ljspeech_is_resampled_from_22050_hz():
    with tfds.testing.mock_data(num_examples=2):
        got = list(tfds.as_numpy(load_examples("speech", "ljspeech", split="test")))
        want = raw("ljspeech", "train[95%:]")
    for g, w in zip(got, want):
        reference = scipy.signal.resample_poly(w["speech"] / 32768.0, 320, 441)  # 16000 / 22050 = 320 / 441
        assert g["audio"].shape == reference.shape
        np.testing.assert_allclose(g["audio"], reference, atol=1e-5)


def test_normalize_transcript_in_tf_matches_the_corpus_rule():
    texts = ["Where is Mary?", "Command-line tool, for GNOME's  desktop.", "HE HOPED THERE WOULD BE STEW FOR DINNER", " 12 o'clock -- now "]
    ours = tfds_sources.normalize_transcript(tf.constant(texts)).numpy()
    assert [t.decode() for t in ours] == [speech.normalize_transcript(t) for t in texts]


# --------------------------------------------------------------------------- a custom dataset by name and fields


class TinyCodeProblems(tfds.core.GeneratorBasedBuilder):
    """A local code dataset with its own feature names, and WAV-byte audio for the speech path."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "task": {"description": tfds.features.Text()},
                    "solution": tfds.features.Text(),
                    "wav": tfds.features.Tensor(shape=(), dtype=np.object_),
                    "pcm": tfds.features.Tensor(shape=(None,), dtype=np.int16),  # samples without a sample rate
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(3):
            buffer = io.BytesIO()
            tone = (8000 * np.sin(2 * np.pi * 300 * np.arange(800 * (i + 1)) / 8000)).astype(np.int16)
            scipy.io.wavfile.write(buffer, 8000, tone)
            yield i, {
                "task": {"description": f"Return {i} squared."},
                "solution": f"def f():\n    return {i} ** 2",
                "wav": buffer.getvalue(),
                "pcm": tone,
            }


def test_custom_dataset_by_name_and_fields(tmp_path):
    prepare("tiny_code_problems", tmp_path)
    ds = load_examples("code", "tiny_code_problems", data_dir=tmp_path, fields={"prompt": "task/description", "code": "solution"})
    assert_common_fields(ds, "code")
    assert list(tfds.as_numpy(ds)) == [{"prompt": f"Return {i} squared.".encode(), "code": f"def f():\n    return {i} ** 2".encode()} for i in range(3)]
    # Audio stored as WAV bytes is decoded and resampled (8 kHz -> 16 kHz: twice the samples).
    speech_ds = load_examples("speech", SpeechSource(dataset="tiny_code_problems", audio="wav", transcript="task/description"), data_dir=tmp_path)
    lengths = [len(ex["audio"]) for ex in tfds.as_numpy(speech_ds)]
    assert lengths == [1600, 3200, 4800]
    # Bare int16 samples need their rate from the source.
    pcm = SpeechSource(dataset="tiny_code_problems", audio="pcm", transcript="task/description")
    with pytest.raises(ValueError, match=r"feature 'pcm' has no sample_rate; pass SpeechSource\(sample_rate=...\)"):
        load_examples("speech", pcm, data_dir=tmp_path)
    from_pcm = list(tfds.as_numpy(load_examples("speech", dataclasses.replace(pcm, sample_rate=8000), data_dir=tmp_path)))
    wav = list(tfds.as_numpy(speech_ds))
    for a, b in zip(from_pcm, wav):
        np.testing.assert_allclose(a["audio"], b["audio"], atol=1e-6)


# --------------------------------------------------------------------------- our offline corpora, small slices


@pytest.mark.parametrize(
    "app, dataset, raw_fields",
    [
        ("translation", None, {"source": "en", "target": "de"}),
        ("translation", "tfsuite_translation/en_ja", {"source": "en", "target": "ja"}),
        ("summarization", None, {"document": "document", "summary": "summary"}),
        ("code", None, {"prompt": "docstring", "code": "code"}),
    ],
    ids=["en_de", "en_ja", "summarization", "code"],
)
def test_offline_text_corpora(app, dataset, raw_fields, small_corpora):
    source = get_source(app, dataset)
    data_dir = small_corpora(source.dataset)
    got = list(tfds.as_numpy(load_examples(app, dataset, split="validation[:5]", data_dir=data_dir)))
    want = raw(source.dataset, "validation[:5]", data_dir)
    assert len(got) == 5
    assert got == [{field: w[path] for field, path in raw_fields.items()} for w in want]


def test_offline_qa_answers_are_spans_of_the_context(small_corpora):
    got = list(tfds.as_numpy(load_examples("qa", split="test[:20]", data_dir=small_corpora("tfsuite_qa"))))
    assert len(got) == 20
    for ex in got:
        context, answer = ex["context"].decode(), ex["answer_text"].decode()
        assert answer and context[ex["answer_start"] : ex["answer_start"] + len(answer)] == answer


def test_offline_captions_are_rgb_images_with_sentences(small_corpora):
    data_dir = small_corpora("tfsuite_captions")
    got = list(tfds.as_numpy(load_examples("captioning", split="train[:4]", data_dir=data_dir)))
    want = raw("tfsuite_captions", "train[:4]", data_dir)
    for g, w in zip(got, want):
        assert g["image"].shape == (128, 128, 3) and g["image"].dtype == np.uint8
        np.testing.assert_array_equal(g["image"], w["image"])
        assert g["caption"] == w["caption"] and len(g["caption"].split()) >= 3


def test_offline_speech_from_a_small_build(tmp_path):
    # The full tfsuite_speech corpus takes hours to synthesize; a few real utterances test the same path.
    records = [(f"pkg{i}", f"{i:032d}", s, ["A long description."]) for i, s in enumerate(["simple music player for the desktop", "tool for sending mail"])]
    write_apt_lists(tmp_path / "raw", {"en": records})
    prepare("tfsuite_speech", tmp_path / "tfds", raw_dir=tmp_path / "raw", fetch=False, utterances={"train": 1, "validation": 1, "test": 2}, processes=1)
    got = list(tfds.as_numpy(load_examples("speech", split="test", data_dir=tmp_path / "tfds")))
    want = raw("tfsuite_speech", "test", tmp_path / "tfds")
    assert len(got) == 2
    for g, w in zip(got, want):
        assert g["audio"].dtype == np.float32 and np.abs(g["audio"]).max() <= 1.0
        np.testing.assert_array_equal(g["audio"], w["audio"].astype(np.float32) / 32768.0)
        assert g["transcript"] == w["transcript"]
