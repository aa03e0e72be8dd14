"""bAbI-style reasoning stories: a seeded generator of short worlds and questions about them.

Source reader for ``tfsuite_qa`` (and utterances for ``tfsuite_speech``), after
the bAbI tasks of Weston et al. (2015), "Towards AI-Complete Question
Answering": people move between rooms and pick up or drop objects, and a
question about the final state needs one or more of the story's facts.

Tasks (name: question, answer):

* ``single_supporting_fact``: "Where is Mary?" -> the room of Mary's last move.
* ``two_supporting_facts``: "Where is the apple?" -> the room of the person
  holding it (pick-up fact + that person's last move), or where it was dropped.
* ``counting``: "How many objects is Mary carrying?" -> none / one / two / three.
* ``yes_no``: "Is Mary in the kitchen?" -> yes / no.

Every story is simulated, so each answer is computed, not templated, and each
:class:`Story` lists the indices of its supporting facts.

Example::

    import random
    from pipelines.corpora.babi_stories import generate

    story = generate("two_supporting_facts", random.Random(0))
    " ".join(story.facts), story.question, story.answer, story.supporting
"""

from __future__ import annotations

import dataclasses

__all__ = ["TASKS", "PEOPLE", "ROOMS", "OBJECTS", "Story", "generate"]

TASKS = ("single_supporting_fact", "two_supporting_facts", "counting", "yes_no")
PEOPLE = ("Mary", "John", "Sandra", "Daniel", "Fred", "Bill", "Julie", "Emma", "Jeff", "Lucy")
ROOMS = ("kitchen", "garden", "office", "bathroom", "hallway", "bedroom", "cellar", "garage")
OBJECTS = ("apple", "football", "milk", "book", "key", "umbrella", "ball", "box")
NUMBERS = ("none", "one", "two", "three", "four")
_MOVES = ("went to", "journeyed to", "travelled to", "moved to", "went back to")
_TAKES = ("picked up", "took", "grabbed", "got")
_DROPS = ("dropped", "put down", "left", "discarded")


@dataclasses.dataclass(frozen=True)
class Story:
    """One generated story.

    Attributes:
        task: str, one of :data:`TASKS`.
        facts: tuple of str, the story sentences in order.
        question: str.
        answer: str, a room, ``yes``/``no`` or a number word.
        supporting: tuple of int, indices into ``facts`` the answer depends on
            (empty for "none" counts and for "no" answers without a move).
    """

    task: str
    facts: tuple
    question: str
    answer: str
    supporting: tuple


class _World:
    def __init__(self, rng, num_people, num_objects):
        self.rng = rng
        self.people = rng.sample(PEOPLE, num_people)
        self.objects = rng.sample(OBJECTS, num_objects)
        self.where = {}  # person -> (room, fact index)
        self.holder = {}  # object -> (person, fact index of the pick-up)
        self.dropped = {}  # object -> (room, fact indices of the dropper's move and of the drop)
        self.facts = []

    def move(self, person=None):
        person = person or self.rng.choice(self.people)
        here = self.where.get(person, (None, None))[0]
        room = self.rng.choice([r for r in ROOMS if r != here])
        self.where[person] = (room, len(self.facts))
        self.facts.append(f"{person} {self.rng.choice(_MOVES)} the {room}.")

    def take(self):
        placed = [p for p in self.people if p in self.where]
        free = [o for o in self.objects if o not in self.holder]
        if not placed or not free:
            return self.move()
        person, thing = self.rng.choice(placed), self.rng.choice(free)
        self.holder[thing] = (person, len(self.facts))
        self.dropped.pop(thing, None)
        self.facts.append(f"{person} {self.rng.choice(_TAKES)} the {thing}.")

    def drop(self):
        held = sorted(self.holder)
        if not held:
            return self.take()
        thing = self.rng.choice(held)
        person, _ = self.holder.pop(thing)
        room, moved = self.where[person]
        self.dropped[thing] = (room, (moved, len(self.facts)))
        self.facts.append(f"{person} {self.rng.choice(_DROPS)} the {thing}.")

    def carried(self, person):
        return sorted(o for o, (p, _) in self.holder.items() if p == person)


def generate(task, rng, num_facts=None):
    """Generate one :class:`Story` for ``task`` from ``rng`` (a ``random.Random``).

    Args:
        task: str, one of :data:`TASKS`.
        rng: ``random.Random``.
        num_facts: int or None, story length; default drawn from 2-8 (4-10
            when objects are involved).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    with_objects = task in ("two_supporting_facts", "counting")
    world = _World(rng, num_people=rng.randint(2, 4), num_objects=rng.randint(2, 4) if with_objects else 0)
    length = num_facts or (rng.randint(4, 10) if with_objects else rng.randint(2, 8))
    for person in world.people[: rng.randint(1, len(world.people))]:
        world.move(person)
    while len(world.facts) < length:
        action = rng.random()
        if with_objects and action < 0.3:
            world.take()
        elif with_objects and action < 0.45:
            world.drop()
        else:
            world.move()
    placed = [p for p in world.people if p in world.where]
    facts = tuple(world.facts)
    if task == "single_supporting_fact":
        person = rng.choice(placed)
        room, index = world.where[person]
        return Story(task, facts, f"Where is {person}?", room, (index,))
    if task == "two_supporting_facts":
        tracked = sorted(set(world.holder) | set(world.dropped))
        if not tracked:
            return generate(task, rng, num_facts)
        thing = rng.choice(tracked)
        if thing in world.holder:
            person, took = world.holder[thing]
            room, moved = world.where[person]
            return Story(task, facts, f"Where is the {thing}?", room, tuple(sorted({took, moved})))
        room, supporting = world.dropped[thing]
        return Story(task, facts, f"Where is the {thing}?", room, supporting)
    if task == "counting":
        person = rng.choice(placed)
        carried = world.carried(person)
        supporting = tuple(sorted(world.holder[o][1] for o in carried))
        return Story(task, facts, f"How many objects is {person} carrying?", NUMBERS[len(carried)], supporting)
    person = rng.choice(placed)
    room, index = world.where[person]
    asked = room if rng.random() < 0.5 else rng.choice([r for r in ROOMS if r != room])
    answer = "yes" if asked == room else "no"
    return Story(task, facts, f"Is {person} in the {asked}?", answer, (index,))
