"""Offline corpora as TFDS datasets, built from Debian packages and the Python standard library.

No dataset hub is reachable, so every app's data is built here from offline
sources, as ``tfds.core.GeneratorBasedBuilder`` builders: local corpora and
real TFDS datasets then go through the same ``tfds.load`` pipeline.

=======================  ===========================================  ====================================
dataset                  content                                      module
=======================  ===========================================  ====================================
tfsuite_translation      en_de / en_ja sentence pairs                 :mod:`~pipelines.corpora.translation`
tfsuite_summarization    Debian long description -> synopsis          :mod:`~pipelines.corpora.summarization`
tfsuite_qa               SQuAD-format QA (Debian + bAbI-style)        :mod:`~pipelines.corpora.qa`
tfsuite_code             stdlib docstring -> function                 :mod:`~pipelines.corpora.code`
tfsuite_captions         emoji scenes, sentence captions, boxes       :mod:`~pipelines.corpora.captions`
tfsuite_speech           synthesized speech, held-out voices          :mod:`~pipelines.corpora.speech`
=======================  ===========================================  ====================================

Source readers shared by the builders: :mod:`~pipelines.corpora.apt_archive`
(private apt lists, ``.deb`` downloads), :mod:`~pipelines.corpora.debian_descriptions`,
:mod:`~pipelines.corpora.gettext_catalogs`, :mod:`~pipelines.corpora.python_stdlib`,
:mod:`~pipelines.corpora.babi_stories`, :mod:`~pipelines.corpora.emoji_catalog`,
:mod:`~pipelines.corpora.tts_voices`. Split assignment and deduplication:
:mod:`~pipelines.corpora.splits`; data dirs and missing-source errors:
:mod:`~pipelines.corpora.sources`.

Every builder deduplicates, splits train/validation/test by *source item*
(never by line), records a version and a description, and raises
:class:`~pipelines.corpora.sources.MissingSourceError` naming the Debian
package to install when a source is absent.

Build with ``python -m pipelines.corpora.build [NAME]`` (see
:mod:`~pipelines.corpora.build`); load with::

    import tensorflow_datasets as tfds
    import pipelines.corpora.translation  # importing a module registers its builder

    ds = tfds.load("tfsuite_translation/en_de", split="train", data_dir="data/tfds")
"""
