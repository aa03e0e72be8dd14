import random
import re

import pytest

import pipelines.corpora.qa  # noqa: F401  (registers tfsuite_qa)
from pipelines.corpora import babi_stories, debian_descriptions, qa
from pipelines.corpora.splits import assign_split
from tests.pipelines.corpora_testdata import ADJECTIVES, NOUNS, load_all, prepare, text, write_apt_lists

_MOVE = re.compile(r"^(\w+) (?:went to|journeyed to|travelled to|moved to|went back to) the (\w+)\.$")
_TAKE = re.compile(r"^(\w+) (?:picked up|took|grabbed|got) the (\w+)\.$")
_DROP = re.compile(r"^(\w+) (?:dropped|put down|left|discarded) the (\w+)\.$")


def _solve(facts, question):
    """An independent reading of a story: replay the facts, answer the question."""
    where, holder, placed = {}, {}, {}
    for fact in facts:
        if m := _MOVE.match(fact):
            where[m[1]] = m[2]
        elif m := _TAKE.match(fact):
            holder[m[2]] = m[1]
        elif m := _DROP.match(fact):
            placed[m[2]] = where[m[1]]
            holder.pop(m[2])
        else:
            raise AssertionError(f"unparsed fact {fact!r}")
    if m := re.match(r"^Where is the (\w+)\?$", question):
        return where[holder[m[1]]] if m[1] in holder else placed[m[1]]
    if m := re.match(r"^Where is (\w+)\?$", question):
        return where[m[1]]
    if m := re.match(r"^How many objects is (\w+) carrying\?$", question):
        return babi_stories.NUMBERS[sum(p == m[1] for p in holder.values())]
    m = re.match(r"^Is (\w+) in the (\w+)\?$", question)
    return "yes" if where[m[1]] == m[2] else "no"


def test_babi_answers_match_an_independent_replay():
    rng = random.Random(7)
    for task in babi_stories.TASKS:
        answers = set()
        for _ in range(200):
            story = babi_stories.generate(task, rng)
            assert story.answer == _solve(story.facts, story.question), (story.facts, story.question)
            assert all(0 <= i < len(story.facts) for i in story.supporting)
            answers.add(story.answer)
        assert len(answers) >= 2, f"{task} always answers {answers}"
    with pytest.raises(ValueError, match="task must be one of"):
        babi_stories.generate("path_finding", rng)


def _description(package, synopsis, *paragraphs):
    return debian_descriptions.Description(package, (package,), synopsis, tuple(paragraphs))


def test_debian_templates_make_span_answers():
    descriptions = {
        "a": _description("libpango-1", "layout", "Pango is a library for layout and rendering of text. It is fast."),
        "b": _description("libpango-dev", "headers", "This package contains the development headers for Pango."),
        "c": _description("faiss", "search", "Faiss is written in C++. It lets you search dense vectors quickly."),
        # Same definition again (another package): deduplicated by (template, answer).
        "d": _description("libpango-2", "layout", "Pango is a library for layout and rendering of text."),
        "e": _description("noise", "none", "There are a few options: plenty."),
    }
    items = qa.debian_items(descriptions, {"libpango-1": "pango", "libpango-dev": "pango"})
    got = {(i["question"], i["answer"]) for i in items}
    assert got == {
        ("What is Pango?", "a library for layout and rendering of text"),
        ("What does the libpango-dev package contain?", "the development headers for Pango"),
        ("What language is Faiss written in?", "C++"),
        ("What does the faiss package allow you to do?", "search dense vectors quickly"),  # "It" is the package
    }
    for item in items:
        start = item["answer_start"]
        assert item["context"][start : start + len(item["answer"])] == item["answer"]
    assert {i["source_item"] for i in items if i["title"].startswith("libpango")} == {"debian:pango"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("qa")
    records = []
    for adj in ADJECTIVES:
        for noun in NOUNS:
            package = f"{adj}-{noun}"
            records.append((package, f"{abs(hash(package)):032d}"[:32], f"{noun} tool",
                            [f"{adj.title()}{noun.title()} is a {adj} program for {noun} files. This package provides the {adj} {noun} command line interface."]))
    write_apt_lists(root / "raw", {"en": records})
    prepare("tfsuite_qa", root / "tfds", raw_dir=root / "raw", fetch=False, babi_per_task=40)
    return load_all("tfsuite_qa", root / "tfds")


def test_squad_layout_offsets_and_sources(data):
    examples = [ex for split in data.values() for ex in split]
    assert set(examples[0]) == {"id", "title", "context", "question", "answers", "source", "source_item"}
    sources = {}
    for ex in examples:
        context = text(ex["context"])
        [answer] = [text(a) for a in ex["answers"]["text"]]
        [start] = ex["answers"]["answer_start"].tolist()
        assert context[start : start + len(answer)] == answer
        sources[text(ex["source"])] = sources.get(text(ex["source"]), 0) + 1
    n = len(ADJECTIVES) * len(NOUNS)
    assert sources == {
        "debian/definition": n, "debian/provides": n,
        "babi/single_supporting_fact": 40, "babi/two_supporting_facts": 40, "babi/counting": 40, "babi/yes_no": 40,
    }  # fmt: skip
    yes_no = [ex for ex in examples if text(ex["source"]) == "babi/yes_no"]
    assert {text(ex["answers"]["text"][0]) for ex in yes_no} == {"yes", "no"}
    assert all(text(ex["context"]).endswith(qa.BABI_OPTIONS) for ex in yes_no)


def test_splits_disjoint_by_source_item(data):
    assert all(data[split] for split in data)
    items = {split: {text(ex["source_item"]) for ex in exs} for split, exs in data.items()}
    assert not (items["train"] & items["validation"] or items["train"] & items["test"] or items["validation"] & items["test"])
    for split, exs in data.items():
        assert all(assign_split(text(ex["source_item"])) == split for ex in exs)
    ids = [text(ex["id"]) for exs in data.values() for ex in exs]
    assert len(ids) == len(set(ids))
