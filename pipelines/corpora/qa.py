"""``tfsuite_qa``: extractive question answering in SQuAD format, from Debian descriptions and bAbI stories.

TFDS dataset builder for the QA app (textbook 6.1 BERT and chapter 10). No
SQuAD-like data ships offline, so the items are made from two sources:

1. English Debian package descriptions (:mod:`pipelines.corpora.debian_descriptions`):
   sentences of a few reliable shapes become questions whose answer is a
   span of the description:

   ==============  ==========================================  ===============================
   template        sentence                                    question
   ==============  ==========================================  ===============================
   definition      "Pango is a library for layout of text."    "What is Pango?"
   provides        "This package contains the sink service."   "What does the foo package contain?"
   allows          "It lets you solve PDEs easily."            "What does the foo package allow you to do?"
   based_on        "Emacspeak is built on top of Emacs."       "What is Emacspeak based on?"
   written_in      "Faiss is written in C++."                  "What language is Faiss written in?"
   ==============  ==========================================  ===============================

   "This"/"It" subjects become "the <package> package". The context is the
   whole long description when it has at most 250 words, else the paragraph
   holding the answer. Deduplicated by (template, answer), so a sentence
   repeated across many packages ("Qt is a cross-platform C++ application
   framework") gives one item.
2. bAbI-style stories (:mod:`pipelines.corpora.babi_stories`): single and two
   supporting facts, counting and yes/no. Answers that are not words of the
   story (``yes``, ``no``, ``none`` ... ``four``) are spans of a fixed
   options sentence appended to every bAbI context, as extractive readers
   do for CoQA's yes/no answers, so every answer is still a span.

Every answer satisfies ``context[answer_start:answer_start + len(text)] == text``.
Split by source item, 90/5/5: the Debian source package, or the story text.

Features (the layout of TFDS ``squad``, plus provenance)::

    id           Text
    title        Text       package name, or "babi/<task>"
    context      Text
    question     Text
    answers      Sequence({"text": Text, "answer_start": int32})
    source       Text       "debian/<template>" or "babi/<task>"
    source_item  Text       split key: "debian:<source package>" or "babi:<sha1 of the story>"

Example::

    import tensorflow_datasets as tfds
    import pipelines.corpora.qa  # registers the builder

    for ex in tfds.load("tfsuite_qa", split="train", data_dir="data/tfds").take(1):
        start = int(ex["answers"]["answer_start"][0])
        print(ex["question"].numpy().decode(), "->", ex["answers"]["text"][0].numpy().decode())
"""

from __future__ import annotations

import hashlib
import logging
import random
import re

import numpy as np
import tensorflow_datasets as tfds

from pipelines.corpora import babi_stories, debian_descriptions
from pipelines.corpora.splits import SPLITS, assign_split, dedup_key

__all__ = ["TfsuiteQa", "BABI_OPTIONS", "debian_items", "babi_items", "collect_items"]

log = logging.getLogger(__name__)

MAX_CONTEXT_WORDS = 250
BABI_PER_TASK = 2500
BABI_OPTIONS = "Possible answers: yes, no, none, one, two, three, four."

_START = r"(?:^|(?<=[.!?] )|(?<=\n))"
_END = r"(?=\.(?:\s|$)|;|:|\n|$| which | that |, which|, that)"
_NAME = r"(?:The )?[A-Z0-9][\w+.'-]*(?: [A-Z0-9][\w+.'-]*){0,3}"
_PRONOUN_SUBJECT = re.compile(r"^(?:This|It|This (?:package|library|module|tool|program|plugin|extension))$")
_TEMPLATES = {
    "definition": re.compile(_START + rf"(?P<subject>{_NAME}) (?P<verb>is|are) (?P<answer>(?:an?|the|one of the) [^\n]{{3,200}}?)" + _END),
    "provides": re.compile(
        _START
        + rf"(?P<subject>This (?:package|library|module|tool|program|plugin|extension)|It|{_NAME}) "
        + r"(?P<verb>provides|contains|includes|offers|implements|supports) (?P<answer>[^\n]{3,200}?)"
        + _END
    ),
    "allows": re.compile(_START + rf"(?P<subject>{_NAME}) (?:(?P<verb>allows|enables) (?:you|users|the user) to|lets (?:you|users|the user)) (?P<answer>[^\n]{{3,150}}?)" + _END),
    "based_on": re.compile(_START + rf"(?P<subject>{_NAME}) is (?:based on|built on top of|built on) (?P<answer>[^\n]{{3,150}}?)" + _END),
    "written_in": re.compile(_START + rf"(?P<subject>{_NAME}) is (?:written|implemented) in (?P<answer>[A-Z][\w+#]*(?: [A-Z][\w+#]*)?)"),
}
_MIN_ANSWER_WORDS = {"definition": 3, "provides": 2, "allows": 2, "based_on": 1, "written_in": 1}
_BAD_ANSWER = re.compile(r"^(?:the )?(?:following|features|such features as|support for)$|^(?:a|an|the) (?:number|lot|set) of$")
_BASE_VERB = {"provides": "provide", "contains": "contain", "includes": "include", "offers": "offer", "implements": "implement", "supports": "support"}


def _question(template, subject, verb, package):
    if _PRONOUN_SUBJECT.match(subject) or subject in ("There", "These", "They", "Both"):
        if subject in ("There", "These", "They", "Both"):
            return None
        subject = f"the {package} package"
    elif subject.startswith("The "):
        subject = "the " + subject[4:]
    if template == "definition":
        return f"What {verb} {subject}?"
    if template == "provides":
        return f"What does {subject} {_BASE_VERB[verb]}?"
    if template == "allows":
        return f"What does {subject} allow you to do?"
    if template == "based_on":
        return f"What is {subject} based on?"
    return f"What language is {subject} written in?"


def debian_items(descriptions, source_of):
    """SQuAD items from ``{md5: Description}``; ``source_of`` maps binary to source package."""
    seen, items = set(), []
    for description in sorted(descriptions.values(), key=lambda d: (d.packages[0], d.md5)):
        package = description.packages[0]
        text = description.text
        whole = len(text.split()) <= MAX_CONTEXT_WORDS
        offset = 0
        for paragraph in description.paragraphs:
            par_start = text.index(paragraph, offset)
            offset = par_start + len(paragraph)
            for template, pattern in _TEMPLATES.items():
                for match in pattern.finditer(paragraph):
                    raw = match.group("answer")
                    answer, lead = raw.strip(), len(raw) - len(raw.lstrip())
                    if len(answer.split()) < _MIN_ANSWER_WORDS[template] or len(answer.split()) > 30:
                        continue
                    if _BAD_ANSWER.match(answer.lower()) or answer.count("(") != answer.count(")"):
                        continue
                    verb = match.groupdict().get("verb", "is")
                    question = _question(template, match.group("subject"), verb, package)
                    key = (template, dedup_key(answer))
                    if question is None or key in seen:
                        continue
                    seen.add(key)
                    start = match.start("answer") + lead
                    context, start = (text, par_start + start) if whole else (paragraph, start)
                    item = f"debian:{source_of.get(package, package)}"
                    items.append(
                        dict(
                            id=f"debian/{package}/{template}/{len(items)}",
                            title=package,
                            context=context,
                            question=question,
                            answer=answer,
                            answer_start=start,
                            source=f"debian/{template}",
                            source_item=item,
                        )
                    )
    return items


def babi_items(per_task=BABI_PER_TASK, seed=0):
    """``per_task`` unique SQuAD items for each bAbI task (see :mod:`pipelines.corpora.babi_stories`)."""
    rng = random.Random(seed)
    items, seen = [], set()
    for task in babi_stories.TASKS:
        made, attempts = 0, 0
        while made < per_task:
            attempts += 1
            if attempts > 50 * per_task:
                raise RuntimeError(f"bAbI task {task}: only {made} unique stories in {attempts} draws")
            story = babi_stories.generate(task, rng)
            body = " ".join(story.facts)
            if (body, story.question) in seen:
                continue
            seen.add((body, story.question))
            context = f"{body} {BABI_OPTIONS}"
            if story.answer in babi_stories.ROOMS:
                # Point at the room in the last supporting fact that names it (the move or drop that fixes it).
                fact = max(i for i in story.supporting if story.facts[i].endswith(f"the {story.answer}."))
                fact_start = sum(len(f) + 1 for f in story.facts[:fact])
                start = fact_start + story.facts[fact].rindex(f"the {story.answer}.") + len("the ")
            else:
                start = len(body) + 1 + BABI_OPTIONS.index(f" {story.answer}") + 1
            digest = hashlib.sha1(body.encode("utf-8")).hexdigest()[:16]
            items.append(
                dict(
                    id=f"babi/{task}/{made}",
                    title=f"babi/{task}",
                    context=context,
                    question=story.question,
                    answer=story.answer,
                    answer_start=start,
                    source=f"babi/{task}",
                    source_item=f"babi:{digest}",
                )
            )
            made += 1
    return items


def collect_items(directory=None, fetch=True, babi_per_task=BABI_PER_TASK):
    """All items (Debian then bAbI) with their ``split``; every answer offset is checked."""
    descriptions = debian_descriptions.load("en", directory, fetch)
    items = debian_items(descriptions, debian_descriptions.source_packages(directory))
    count_debian = len(items)
    items += babi_items(babi_per_task)
    for item in items:
        start = item["answer_start"]
        if item["context"][start : start + len(item["answer"])] != item["answer"]:
            raise AssertionError(f"answer offset does not point at the answer in item {item['id']}")
        item["split"] = assign_split(item["source_item"])
    log.info("qa: %d Debian items, %d bAbI items", count_debian, len(items) - count_debian)
    return items


class TfsuiteQa(tfds.core.GeneratorBasedBuilder):
    """SQuAD-format extractive QA from Debian descriptions and bAbI-style stories."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Five Debian description templates; four bAbI tasks, 2,500 stories each."}

    def __init__(self, *, raw_dir=None, fetch=True, babi_per_task=BABI_PER_TASK, **kwargs):
        """``raw_dir``, ``fetch``, ``babi_per_task``: see :func:`collect_items`; the rest goes to TFDS."""
        self._raw_dir, self._fetch, self._babi_per_task = raw_dir, fetch, babi_per_task
        super().__init__(**kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("Every answer satisfies")[0].strip(),
            features=tfds.features.FeaturesDict(
                {
                    "id": tfds.features.Text(),
                    "title": tfds.features.Text(),
                    "context": tfds.features.Text(),
                    "question": tfds.features.Text(),
                    "answers": tfds.features.Sequence(
                        {"text": tfds.features.Text(), "answer_start": tfds.features.Scalar(dtype=np.int32)}
                    ),
                    "source": tfds.features.Text(),
                    "source_item": tfds.features.Text(),
                }
            ),
            supervised_keys=None,
            homepage="https://rajpurkar.github.io/SQuAD-explorer/",
            license="Debian descriptions: per-package licences; bAbI-style stories: generated (Apache-2.0)",
        )

    def _split_generators(self, dl_manager):
        items = collect_items(self._raw_dir, self._fetch, self._babi_per_task)
        return {split: self._generate_examples([i for i in items if i["split"] == split]) for split in SPLITS}

    def _generate_examples(self, items):
        for item in items:
            yield item["id"], {
                "id": item["id"],
                "title": item["title"],
                "context": item["context"],
                "question": item["question"],
                "answers": {"text": [item["answer"]], "answer_start": [item["answer_start"]]},
                "source": item["source"],
                "source_item": item["source_item"],
            }
