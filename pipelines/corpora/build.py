"""Build the offline corpora as TFDS datasets: ``python -m pipelines.corpora.build [NAME ...]``.

``build(name=None, data_dir=None, max_examples=None)`` prepares one corpus
(``"tfsuite_translation"``, ``"tfsuite_translation/en_ja"``, ``"translation"``,
...) or, with ``name=None``, all six, smallest first, and prints the example
count of every split. Prepared datasets are reused, so a second call only
prints the counts. Also wired into the CLI as ``tfsuite data build [NAME]``.

``max_examples`` caps every split (TFDS ``max_examples_per_split``) for a
quick smoke build; such builds go to ``<data_dir>/max_examples_<N>`` so they
never shadow a full build.

Data dir: the ``data_dir`` argument, else ``$TFSUITE_DATA_DIR``, else
``<repo>/data/tfds``; raw sources (apt lists, downloaded ``.deb`` files) go to
``$TFSUITE_RAW_DIR`` or ``<repo>/data/raw``.

Example::

    python -m pipelines.corpora.build translation            # both configs
    python -m pipelines.corpora.build --max-examples 50      # every corpus, 50 per split
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

import tensorflow_datasets as tfds

from pipelines.corpora.sources import MissingSourceError, data_dir as default_data_dir

__all__ = ["CORPORA", "build", "dataset_names", "main"]

# Dataset name -> module defining its builder; in build order (cheap text corpora first).
CORPORA = {
    "tfsuite_translation": "pipelines.corpora.translation",
    "tfsuite_summarization": "pipelines.corpora.summarization",
    "tfsuite_qa": "pipelines.corpora.qa",
    "tfsuite_code": "pipelines.corpora.code",
    "tfsuite_captions": "pipelines.corpora.captions",
    "tfsuite_speech": "pipelines.corpora.speech",
}


def _builder_class(dataset):
    if dataset not in CORPORA:
        short = {name.removeprefix("tfsuite_"): name for name in CORPORA}
        if dataset not in short:
            raise ValueError(
                f"unknown corpus {dataset!r}; choose one of {sorted(CORPORA)} "
                f"(or without the prefix: {sorted(short)})"
            )
        dataset = short[dataset]
    importlib.import_module(CORPORA[dataset])  # defining the class registers it with TFDS
    return dataset, tfds.builder_cls(dataset)


def dataset_names(name=None):
    """Expand ``name`` (None, a dataset, a short name, or ``dataset/config``) into ``dataset[/config]`` names."""
    names = list(CORPORA) if name is None else [name]
    out = []
    for entry in names:
        dataset, _, config = entry.partition("/")
        dataset, cls = _builder_class(dataset)
        configs = [c.name for c in cls.BUILDER_CONFIGS] or [None]
        if config:
            if config not in configs:
                raise ValueError(f"{dataset} has no config {config!r}; configs: {configs}")
            configs = [config]
        out += [f"{dataset}/{c}" if c else dataset for c in configs]
    return out


def build(name=None, data_dir=None, max_examples=None, print_fn=print):
    """Prepare corpus ``name`` (all when None) under ``data_dir``; return ``{name: {split: count}}``.

    Args:
        name: str or None, a dataset (``"tfsuite_qa"``), its short name (``"qa"``)
            or ``dataset/config``; None builds every corpus.
        data_dir: str or Path or None, the TFDS data dir (default ``<repo>/data/tfds``).
        max_examples: int or None, cap on every split for a smoke build.
        print_fn: callable, default ``print``; receives one line per split.
    """
    if max_examples is not None and max_examples < 1:
        raise ValueError(f"max_examples must be a positive int or None, got {max_examples}")
    root = default_data_dir(data_dir)
    if max_examples is not None:
        root = root / f"max_examples_{max_examples}"
    config = tfds.download.DownloadConfig(max_examples_per_split=max_examples, try_download_gcs=False)
    counts = {}
    for full_name in dataset_names(name):
        start = time.perf_counter()
        builder = tfds.builder(full_name, data_dir=str(root))
        reused = builder.is_prepared()
        builder.download_and_prepare(download_config=config)
        seconds = time.perf_counter() - start
        counts[full_name] = {split: info.num_examples for split, info in builder.info.splits.items()}
        state = "already built" if reused else f"built in {seconds:.0f} s"
        print_fn(f"{full_name} {builder.info.version} ({state}, {builder.data_dir})")
        for split in ("train", "validation", "test"):
            if split in counts[full_name]:
                print_fn(f"  {split:<10} {counts[full_name][split]:>8,d}")
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.corpora.build", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("names", nargs="*", help=f"corpora to build (default: all): {', '.join(CORPORA)}")
    parser.add_argument("--data-dir", default=None, help="TFDS data dir (default: $TFSUITE_DATA_DIR or <repo>/data/tfds)")
    parser.add_argument("--max-examples", type=int, default=None, help="cap every split (smoke build)")
    args = parser.parse_args(argv)
    try:
        for name in args.names or [None]:
            build(name, data_dir=args.data_dir, max_examples=args.max_examples)
    except (MissingSourceError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
