"""Where each app's examples come from: our offline corpora or a real TFDS dataset, by name.

Every app reads examples with the same *common fields*, whatever the dataset
(default dataset: our offline corpus, :mod:`pipelines.corpora`):

* translation: ``source``, ``target`` (str); default ``tfsuite_translation/en_de``
* summarization: ``document``, ``summary`` (str); default ``tfsuite_summarization``
* qa: ``context``, ``question``, ``answer_text`` (str), ``answer_start``
  (int32 character offset); default ``tfsuite_qa``
* code: ``prompt``, ``code`` (str); default ``tfsuite_code``
* captioning: ``image`` (uint8 ``(H, W, 3)``), ``caption`` (str); default ``tfsuite_captions``
* speech: ``audio`` (float32 ``(samples,)`` in ``[-1, 1]`` at 16 kHz),
  ``transcript`` (str); default ``tfsuite_speech``

One typed dataclass per app (:class:`TranslationSource` ...) says which
dataset to read, which raw feature feeds each common field (``"answers/text"``
is a path into a nested feature; a sequence feature gives its first element
for a scalar field), and how the app's ``train`` / ``validation`` / ``test``
map onto the dataset's splits. :data:`PRESETS` holds one per known dataset:

* translation: ``tfsuite_translation/en_de``, ``tfsuite_translation/en_ja``,
  ``wmt14_translate/de-en`` (English to German, as our ``en_de``);
* summarization: ``tfsuite_summarization``, ``cnn_dailymail`` (article -> highlights);
* qa: ``tfsuite_qa``, ``squad`` (``squad/v1.1``), ``squad/v2.0`` (an
  unanswerable question gives ``answer_text=""``, ``answer_start=-1``);
* code: ``tfsuite_code``. TFDS 4.9 has no code-generation dataset (no MBPP,
  HumanEval or CodeSearchNet builder), so any other code set is a custom
  name plus ``fields``;
* captioning: ``tfsuite_captions``, ``coco_captions`` (first caption of
  each image, or ``all_captions=True`` for one example per caption);
* speech: ``tfsuite_speech``, ``librispeech``, ``ljspeech`` (22.05 kHz,
  resampled to 16 kHz by :func:`pipelines.audio.resample`).

Any other TFDS dataset works with a field mapping::

    load_examples("code", "my_code_set", fields={"prompt": "description", "code": "solution"})

Splits: our corpora have ``train``, ``validation`` and ``test``. ``squad``
has no test split: ``test`` reads SQuAD's validation set and ``validation``
the last 5 % of its training set (``train`` the first 95 %). ``coco_captions``
uses the Karpathy splits (``train+restval``, ``val``, ``test``);
``librispeech`` reads ``train_clean100``, ``dev_clean``, ``test_clean``;
``ljspeech`` (one split) 90/5/5 by slicing. ``split_mapping`` overrides
entries; a split the mapping does not name (``"train[:100]"``, ``"dev_other"``)
goes to TFDS as written, and ``"train[:100]"`` slices the mapped ``train`` when that is a single split.

Nothing is downloaded unless ``download=True``: this build machine has no
internet, so a dataset that is not prepared in ``data_dir`` raises
:class:`DatasetNotPreparedError` saying how to prepare it. Our corpora live in
:func:`pipelines.corpora.sources.data_dir` (``<repo>/data/tfds``); public
datasets in TFDS's default (``~/tensorflow_datasets`` or ``$TFDS_DATA_DIR``).

Example::

    from pipelines.tfds_sources import load_examples

    ds = load_examples("qa", split="validation")                   # tfsuite_qa
    ds = load_examples("qa", "squad", split="test")                 # SQuAD validation, if downloaded
    for ex in ds.take(1):
        print(ex["question"].numpy(), ex["answer_text"].numpy(), int(ex["answer_start"]))
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import types
from typing import ClassVar, Mapping

import tensorflow as tf
import tensorflow_datasets as tfds

from pipelines import audio as audio_lib
from pipelines import images as images_lib
from pipelines.corpora import sources as corpora_sources
from pipelines.corpora.build import CORPORA

__all__ = [
    "APPS",
    "PRESETS",
    "DatasetNotPreparedError",
    "TranslationSource",
    "SummarizationSource",
    "QASource",
    "CodeSource",
    "CaptioningSource",
    "SpeechSource",
    "get_source",
    "resolve_split",
    "corpus_texts",
    "load_columns",
    "load_examples",
]

SPLITS = ("train", "validation", "test")
_IDENTITY = types.MappingProxyType({s: s for s in SPLITS})
_SLICED = re.compile(r"^(?P<base>[\w-]+)(?P<slice>\[.*\])$")
# Lower-case, hyphens as spaces, only a-z, apostrophe and space: pipelines.corpora.speech.normalize_transcript in TF ops.
_NOT_TRANSCRIBED = r"[^a-z' ]+"


class DatasetNotPreparedError(FileNotFoundError):
    """The dataset is known to TFDS but its files are not in the data dir."""


def _splits(**mapping):
    return types.MappingProxyType(mapping)


@dataclasses.dataclass(frozen=True)
class _Source:
    """Fields common to every app's source: the TFDS name and the split mapping."""

    dataset: str = ""
    splits: Mapping[str, str] = dataclasses.field(default_factory=lambda: _IDENTITY)

    app: ClassVar[str] = ""
    fields: ClassVar[tuple] = ()

    def feature_paths(self):
        """``{common field: raw feature path}``."""
        return {name: getattr(self, name) for name in self.fields}

    def convert(self, ds, features):
        """Map a raw TFDS dataset to the common fields (``features``: the dataset's ``FeaturesDict``).

        Per-example sources define ``to_common(example, features)``; the image
        and audio sources override ``convert`` itself.
        """
        return ds.map(lambda ex: self.to_common(ex, features), num_parallel_calls=tf.data.AUTOTUNE)


def _get(example, path):
    for part in path.split("/"):
        example = example[part]
    return example


def _first(value, default):
    """A scalar field read from a sequence feature takes its first element (``default`` when empty)."""
    if value.shape.rank == 0:
        return value
    value = tf.reshape(value, [-1])
    return tf.cond(tf.size(value) > 0, lambda: value[0], lambda: tf.constant(default, value.dtype))


def _text(example, path):
    return _first(_get(example, path), "")


@dataclasses.dataclass(frozen=True)
class TranslationSource(_Source):
    """Translation pairs. ``source`` / ``target``: raw feature paths of the two sides."""

    dataset: str = "tfsuite_translation/en_de"
    source: str = "en"
    target: str = "de"

    app: ClassVar[str] = "translation"
    fields: ClassVar[tuple] = ("source", "target")

    def to_common(self, example, features):
        return {"source": _text(example, self.source), "target": _text(example, self.target)}


@dataclasses.dataclass(frozen=True)
class SummarizationSource(_Source):
    """Document/summary pairs. ``document`` / ``summary``: raw feature paths."""

    dataset: str = "tfsuite_summarization"
    document: str = "document"
    summary: str = "summary"

    app: ClassVar[str] = "summarization"
    fields: ClassVar[tuple] = ("document", "summary")

    def to_common(self, example, features):
        return {"document": _text(example, self.document), "summary": _text(example, self.summary)}


@dataclasses.dataclass(frozen=True)
class QASource(_Source):
    """Extractive QA (SQuAD layout). The first answer is the target; no answer gives ``("", -1)``.

    ``answer_start`` is a character offset into ``context``, as in SQuAD.
    """

    dataset: str = "tfsuite_qa"
    context: str = "context"
    question: str = "question"
    answer_text: str = "answers/text"
    answer_start: str = "answers/answer_start"

    app: ClassVar[str] = "qa"
    fields: ClassVar[tuple] = ("context", "question", "answer_text", "answer_start")

    def to_common(self, example, features):
        return {
            "context": _text(example, self.context),
            "question": _text(example, self.question),
            "answer_text": _text(example, self.answer_text),
            "answer_start": tf.cast(_first(_get(example, self.answer_start), -1), tf.int32),
        }


@dataclasses.dataclass(frozen=True)
class CodeSource(_Source):
    """Docstring-to-code pairs. ``prompt`` / ``code``: raw feature paths."""

    dataset: str = "tfsuite_code"
    prompt: str = "docstring"
    code: str = "code"

    app: ClassVar[str] = "code"
    fields: ClassVar[tuple] = ("prompt", "code")

    def to_common(self, example, features):
        return {"prompt": _text(example, self.prompt), "code": _text(example, self.code)}


@dataclasses.dataclass(frozen=True)
class CaptioningSource(_Source):
    """Image/caption pairs; the image becomes uint8 RGB (decoded if stored as bytes, grey -> RGB).

    ``all_captions``: bool, default ``False``: one example per caption of a
    multi-caption image instead of its first caption only. Images without a
    caption are dropped.
    """

    dataset: str = "tfsuite_captions"
    image: str = "image"
    caption: str = "caption"
    all_captions: bool = False

    app: ClassVar[str] = "captioning"
    fields: ClassVar[tuple] = ("image", "caption")

    def convert(self, ds, features):
        def image_and_captions(example):
            image = images_lib.decode_image(_get(example, self.image), channels=3)
            return image, tf.reshape(_get(example, self.caption), [-1])

        pairs = ds.map(image_and_captions, num_parallel_calls=tf.data.AUTOTUNE)
        if self.all_captions:
            return pairs.flat_map(
                lambda image, captions: tf.data.Dataset.from_tensor_slices(captions).map(
                    lambda caption: {"image": image, "caption": caption}
                )
            )
        return pairs.filter(lambda image, captions: tf.size(captions) > 0).map(
            lambda image, captions: {"image": image, "caption": captions[0]}
        )


@dataclasses.dataclass(frozen=True)
class SpeechSource(_Source):
    """Audio/transcript pairs; audio becomes float32 in ``[-1, 1]`` at 16 kHz.

    Integer samples are divided by ``2 ** (pcm_bits - 1)``; WAV bytes are
    decoded. The source rate is the audio feature's ``sample_rate`` (or
    ``sample_rate`` here when the feature has none); other rates are
    resampled. ``normalize_transcript`` applies the ``tfsuite_speech`` target
    normalisation (lower case, hyphens as spaces, only ``a-z``, ``'`` and
    spaces) so that, e.g., LibriSpeech's upper-case text matches.
    """

    dataset: str = "tfsuite_speech"
    audio: str = "audio"
    transcript: str = "transcript"
    pcm_bits: int = 16
    sample_rate: int | None = None
    normalize_transcript: bool = False

    app: ClassVar[str] = "speech"
    fields: ClassVar[tuple] = ("audio", "transcript")

    def convert(self, ds, features):
        feature = _feature_at(features, self.audio)
        rate = getattr(feature, "sample_rate", None) or self.sample_rate
        if rate is None and feature.dtype != tf.string:
            raise ValueError(
                f"{self.dataset}: feature {self.audio!r} has no sample_rate; pass SpeechSource(sample_rate=...)"
            )

        def to_common(example):
            raw = _get(example, self.audio)
            if raw.dtype == tf.string:
                waveform, header_rate = audio_lib.decode_wav(raw)
                waveform = audio_lib.resample(waveform, header_rate, audio_lib.SAMPLE_RATE)
            else:
                waveform = tf.reshape(tf.cast(raw, tf.float32), [-1])
                if raw.dtype.is_integer:
                    waveform = waveform / float(2 ** (self.pcm_bits - 1))
                if rate != audio_lib.SAMPLE_RATE:
                    waveform = audio_lib.resample(waveform, int(rate), audio_lib.SAMPLE_RATE)
            transcript = _text(example, self.transcript)
            if self.normalize_transcript:
                transcript = normalize_transcript(transcript)
            return {"audio": waveform, "transcript": transcript}

        return ds.map(to_common, num_parallel_calls=tf.data.AUTOTUNE)


def normalize_transcript(text):
    """TF-op twin of :func:`pipelines.corpora.speech.normalize_transcript` (ASCII text)."""
    text = tf.strings.regex_replace(tf.strings.lower(text), "-", " ")
    text = tf.strings.regex_replace(text, _NOT_TRANSCRIBED, " ")
    return tf.strings.strip(tf.strings.regex_replace(text, " +", " "))


_CLASSES = {cls.app: cls for cls in (TranslationSource, SummarizationSource, QASource, CodeSource, CaptioningSource, SpeechSource)}
APPS = tuple(_CLASSES)

_SQUAD_SPLITS = _splits(train="train[:95%]", validation="train[95%:]", test="validation")
PRESETS = {
    "translation": {
        "tfsuite_translation/en_de": TranslationSource(),
        "tfsuite_translation/en_ja": TranslationSource(dataset="tfsuite_translation/en_ja", target="ja"),
        "wmt14_translate/de-en": TranslationSource(dataset="wmt14_translate/de-en", source="en", target="de"),
    },
    "summarization": {
        "tfsuite_summarization": SummarizationSource(),
        "cnn_dailymail": SummarizationSource(dataset="cnn_dailymail", document="article", summary="highlights"),
    },
    "qa": {
        "tfsuite_qa": QASource(),
        "squad": QASource(dataset="squad", splits=_SQUAD_SPLITS),
        "squad/v1.1": QASource(dataset="squad/v1.1", splits=_SQUAD_SPLITS),
        "squad/v2.0": QASource(dataset="squad/v2.0", splits=_SQUAD_SPLITS),
    },
    "code": {"tfsuite_code": CodeSource()},
    "captioning": {
        "tfsuite_captions": CaptioningSource(),
        "coco_captions": CaptioningSource(
            dataset="coco_captions", caption="captions/text", splits=_splits(train="train+restval", validation="val", test="test")
        ),
    },
    "speech": {
        "tfsuite_speech": SpeechSource(),
        "librispeech": SpeechSource(
            dataset="librispeech", audio="speech", transcript="text", normalize_transcript=True,
            splits=_splits(train="train_clean100", validation="dev_clean", test="test_clean"),
        ),
        "ljspeech": SpeechSource(
            dataset="ljspeech", audio="speech", transcript="text_normalized", normalize_transcript=True,
            splits=_splits(train="train[:90%]", validation="train[90%:95%]", test="train[95%:]"),
        ),
    },
}  # fmt: skip
# Without a config our translation corpus means its default config.
PRESETS["translation"]["tfsuite_translation"] = PRESETS["translation"]["tfsuite_translation/en_de"]


def _check_app(app):
    if app not in _CLASSES:
        raise ValueError(f"unknown app {app!r}; choose one of {list(APPS)}")
    return _CLASSES[app]


def _base_name(dataset):
    return dataset.split(":")[0]


def get_source(app, dataset=None, fields=None):
    """The app's source dataclass for ``dataset`` (name, dataclass or None for our corpus), with ``fields`` applied.

    Args:
        app: str, one of :data:`APPS`.
        dataset: str, a source dataclass of ``app`` or None. A name without a
            preset needs ``fields``.
        fields: dict or None: ``{common field: raw feature path}`` overrides,
            e.g. ``{"prompt": "text", "code": "solution"}``.
    """
    cls = _check_app(app)
    presets = PRESETS[app]
    if fields:
        unknown = sorted(set(fields) - set(cls.fields))
        if unknown:
            raise ValueError(f"fields {unknown} are not common fields of app {app!r}; its fields are {list(cls.fields)}")
    if dataset is None:
        source = next(iter(presets.values()))
    elif isinstance(dataset, _Source):
        if not isinstance(dataset, cls):
            raise ValueError(f"app {app!r} takes a {cls.__name__}, got a {type(dataset).__name__}")
        source = dataset
    elif isinstance(dataset, str):
        preset = presets.get(_base_name(dataset))
        if preset is None and not fields:
            raise ValueError(
                f"no field mapping for dataset {dataset!r} in app {app!r}: known datasets are {sorted(presets)}; "
                f"for another TFDS dataset pass fields={{{', '.join(f'{f!r}: <raw feature>' for f in cls.fields)}}}"
            )
        source = dataclasses.replace(preset or cls(), dataset=dataset)
    else:
        raise TypeError(f"dataset must be a name, a {cls.__name__} or None, got {type(dataset).__name__}")
    return dataclasses.replace(source, **fields) if fields else source


def resolve_split(source, split="train", split_mapping=None):
    """The TFDS split expression ``split`` reads for ``source`` (``split_mapping`` entries win)."""
    mapping = {**source.splits, **(split_mapping or {})}
    if split in mapping:
        return mapping[split]
    match = _SLICED.match(split)
    if match and match["base"] in mapping and re.fullmatch(r"[\w-]+", mapping[match["base"]]):
        return mapping[match["base"]] + match["slice"]
    return split


def _feature_at(features, path):
    feature = features
    for part in path.split("/"):
        feature = getattr(feature, "feature", feature)  # Sequence(FeaturesDict) -> FeaturesDict
        if not hasattr(feature, "keys") or part not in feature.keys():
            return None
        feature = feature[part]
    return feature


def _builder(source, data_dir):
    name = _base_name(source.dataset)
    module = CORPORA.get(name.split("/")[0])
    if module is not None:
        importlib.import_module(module)  # defining the builder class registers it with TFDS
        data_dir = corpora_sources.data_dir(data_dir)
    try:
        return tfds.builder(source.dataset, data_dir=None if data_dir is None else str(data_dir))
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(
            f"unknown dataset {source.dataset!r}: TFDS has no builder of that name (see tfds.list_builders()); "
            f"known for app {source.app!r}: {sorted(PRESETS[source.app])}"
        ) from error


def _not_prepared(source, builder, data_dir):
    name = _base_name(source.dataset)
    where = builder.data_dir if data_dir is None else data_dir
    if name.split("/")[0] in CORPORA:
        how = (
            f"build it with `tfsuite data build {name.split('/')[0]}` "
            f"(or `python -m pipelines.corpora.build {name.split('/')[0]}`), or point data_dir / "
            f"${corpora_sources.DATA_DIR_ENV} at a folder that holds it"
        )
    else:
        how = (
            f"it is a public dataset that must be downloaded first: load_examples(..., download=True) or "
            f"`tfds build {name} --data_dir DIR` on a machine with internet (this one has none), "
            "or copy a prepared copy into data_dir"
        )
    return DatasetNotPreparedError(f"dataset {source.dataset!r} is not prepared in {where}: {how}")


def load_examples(app, dataset=None, split="train", data_dir=None, split_mapping=None, *, fields=None, download=False):
    """Read ``split`` of ``dataset`` as a ``tf.data.Dataset`` of the app's common fields.

    Args:
        app: str, one of :data:`APPS`.
        dataset: str, source dataclass or None (default: our offline corpus for the app).
        split: str, default ``"train"``: ``train`` / ``validation`` / ``test``
            (mapped per dataset), a sliced one (``"train[:100]"``) or any TFDS split expression.
        data_dir: str or Path or None. Default: ``<repo>/data/tfds`` (or
            ``$TFSUITE_DATA_DIR``) for our corpora, TFDS's default for public ones.
        split_mapping: dict or None: overrides of the source's split mapping.
        fields: dict or None: ``{common field: raw feature path}``, see :func:`get_source`.
        download: bool, default ``False``: let TFDS download and prepare a missing public dataset.

    Returns:
        ``tf.data.Dataset`` of dicts with the app's common fields, in file order (deterministic).

    Raises:
        ValueError: unknown app, dataset without a mapping, or a mapped feature the dataset lacks.
        DatasetNotPreparedError: the dataset is not in ``data_dir`` (and ``download`` is off).
    """
    source = get_source(app, dataset, fields)
    builder = _builder(source, data_dir)
    features = builder.info.features
    missing = {field: path for field, path in source.feature_paths().items() if _feature_at(features, path) is None}
    if missing:
        raise ValueError(
            f"dataset {source.dataset!r} has no feature {', '.join(map(repr, missing.values()))} "
            f"(for {', '.join(missing)}); its features are {sorted(features.keys())}"
        )
    tfds_split = resolve_split(source, split, split_mapping)
    if download:
        builder.download_and_prepare()
    try:
        raw = builder.as_dataset(split=tfds_split, shuffle_files=False)
    except AssertionError as error:  # TFDS' "could not find data in <dir>"
        raise _not_prepared(source, builder, data_dir) from error
    except ValueError as error:
        if "Unknown split" in str(error):
            known = sorted(builder.info.splits.keys())
            raise ValueError(
                f"split {split!r} of {source.dataset!r} maps to {tfds_split!r}, which the dataset does not have "
                f"(its splits: {known}); pass split_mapping={{{split!r}: <one of {known}>}}"
            ) from error
        raise
    return source.convert(raw, features)


def load_columns(app, dataset=None, split="train", limit=None, **kwargs):
    """:func:`load_examples` read into Python lists: ``{field: [str or int, ...]}`` (strings decoded as UTF-8),
    the first ``limit`` examples. Raises ``ValueError`` if the split yields none."""
    ds = load_examples(app, dataset, split=split, **kwargs)
    ds = ds.take(limit) if limit is not None else ds
    columns = {}
    for batch in ds.batch(4096).as_numpy_iterator():
        for name, values in batch.items():
            if values.ndim != 1:
                raise ValueError(f"load_columns reads scalar features only; {name!r} has shape {values.shape[1:]}")
            columns.setdefault(name, []).extend(
                v.decode("utf-8") if isinstance(v, bytes) else v.item() for v in values)
    if not columns:
        raise ValueError(f"split {split!r} of {dataset or get_source(app).dataset} is empty (limit={limit})")
    return columns


def corpus_texts(fields_by_app, splits=("train", "validation")):
    """The texts of several apps' offline corpora, those built here: ``fields_by_app`` maps an app to the fields
    to read (``{"qa": ("question", "context"), "summarization": ("document",)}``). A corpus that is not built
    is skipped with a printed line (it narrows what the texts cover, nothing else)."""
    texts = []
    for app, fields in fields_by_app.items():
        for split in splits:
            try:
                columns = load_columns(app, split=split)
            except Exception as error:  # noqa: BLE001 - tfds raises several types for a corpus not built
                print(f"corpus texts: {app} {split} not read ({type(error).__name__})")
                continue
            texts.extend(text for field in fields for text in columns[field])
    return texts

