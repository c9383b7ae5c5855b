"""The embedded task's language: a tiny review grammar with an exact recogniser.

Why a generated language: the default tier must run offline, know the true label of
every pair and judge answers without an API.  The gold reward is the VADER sentiment of
each sentence, but only for sentences the grammar accepts, so a policy cannot win by
emitting strings of positive words, invented words or a repeated sentence (the hacks a
pure sentiment score invites).

Grammar (words separated by single spaces, every sentence ends with " ."):

    SENT  := NP VP "."
    NP    := DET (INTENS? ADJ){0,2} NOUN
    VP    := TVERB NP | COP NEG? INTENS? ADJ | IVERB ADVERB?
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

DET = ("the", "a", "this", "that", "every", "my", "our")
NOUN = (
    "movie", "film", "plot", "story", "actor", "cast", "ending", "music", "scene", "script",
    "director", "camera", "dialogue", "soundtrack", "pacing", "finale", "set", "costume",
    "hero", "villain",
)
INTENS = ("very", "really", "quite", "truly", "so", "extremely")
NEG = ("not",)
COP = ("is", "was", "seems", "feels")
ADJ_NEUTRAL = (
    "long", "old", "new", "short", "quiet", "loud", "young", "dark", "simple", "final",
    "main", "second", "modern",
)
ADJ_POS = (
    "good", "great", "wonderful", "beautiful", "brilliant", "lovely", "excellent",
    "charming", "clever", "fun", "superb", "delightful", "fantastic", "amazing", "perfect",
    "sweet", "smart", "funny",
)
ADJ_NEG = (
    "bad", "terrible", "awful", "boring", "dull", "ugly", "horrible", "stupid", "weak",
    "poor", "messy", "painful", "lame", "sad", "annoying",
)
TVERB_NEUTRAL = ("has", "shows", "follows", "meets", "needs", "saves")
TVERB_POS = ("loves", "likes", "enjoys", "admires", "helps")
TVERB_NEG = ("hates", "ruins", "hurts", "kills")
IVERB_NEUTRAL = ("ends", "starts", "moves", "continues", "changes", "shines", "works")
IVERB_POS = ("succeeds", "wins")
IVERB_NEG = ("fails", "drags", "sucks", "suffers", "collapses")
ADVERB_NEUTRAL = ("slowly", "quickly", "again", "today", "poorly")
ADVERB_POS = ("well", "beautifully", "nicely")
ADVERB_NEG = ("badly",)

ADJ = ADJ_NEUTRAL + ADJ_POS + ADJ_NEG
TVERB = TVERB_NEUTRAL + TVERB_POS + TVERB_NEG
IVERB = IVERB_NEUTRAL + IVERB_POS + IVERB_NEG
ADVERB = ADVERB_NEUTRAL + ADVERB_POS + ADVERB_NEG
VOCAB = tuple(sorted(set(DET + NOUN + INTENS + NEG + COP + ADJ + TVERB + IVERB + ADVERB + (".",))))

_SETS = {
    "DET": frozenset(DET), "NOUN": frozenset(NOUN), "INTENS": frozenset(INTENS),
    "NEG": frozenset(NEG), "COP": frozenset(COP), "ADJ": frozenset(ADJ),
    "TVERB": frozenset(TVERB), "IVERB": frozenset(IVERB), "ADVERB": frozenset(ADVERB),
}


def _parse_np(w: list[str], i: int) -> int:
    """Return the index after an NP starting at i, or -1."""
    if i >= len(w) or w[i] not in _SETS["DET"]:
        return -1
    i += 1
    for _ in range(2):
        j = i
        if j < len(w) and w[j] in _SETS["INTENS"]:
            j += 1
        if j < len(w) and w[j] in _SETS["ADJ"]:
            i = j + 1
        else:
            break
    if i < len(w) and w[i] in _SETS["NOUN"]:
        return i + 1
    return -1


def _parse_vp(w: list[str], i: int) -> int:
    if i >= len(w):
        return -1
    if w[i] in _SETS["TVERB"]:
        return _parse_np(w, i + 1)
    if w[i] in _SETS["COP"]:
        i += 1
        if i < len(w) and w[i] in _SETS["NEG"]:
            i += 1
        if i < len(w) and w[i] in _SETS["INTENS"]:
            i += 1
        return i + 1 if i < len(w) and w[i] in _SETS["ADJ"] else -1
    if w[i] in _SETS["IVERB"]:
        i += 1
        if i < len(w) and w[i] in _SETS["ADVERB"]:
            i += 1
        return i
    return -1


def is_sentence(words: list[str]) -> bool:
    """Exact recogniser of one sentence (without its final ".")."""
    j = _parse_np(words, 0)
    if j < 0:
        return False
    return _parse_vp(words, j) == len(words)


def split_sentences(text: str) -> tuple[list[str], bool]:
    """Split text into sentences (each ending in "."); flag a trailing fragment."""
    words = text.split()
    sents, cur = [], []
    for t in words:
        if t == ".":
            sents.append(" ".join(cur + ["."]))
            cur = []
        else:
            cur.append(t)
    return sents, bool(cur)


@lru_cache(maxsize=1)
def _vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


@lru_cache(maxsize=200_000)
def sentence_score(sentence: str) -> float:
    """VADER compound score of one well-formed sentence, in [-1, 1]."""
    return float(_vader().polarity_scores(sentence)["compound"])


@dataclass(frozen=True)
class RewardBreakdown:
    reward: float
    n_units: int
    n_valid: int


def gold_reward(text: str) -> RewardBreakdown:
    """Gold reward of a response: mean over its units of the sentence score.

    A unit is a sentence or a trailing fragment.  A unit that does not parse, or that
    repeats an earlier sentence of the same response, scores -1 (the worst sentiment), so
    degenerate text always loses.  An empty response scores -1.  Averaging (not summing)
    keeps the reward neutral to length.
    """
    sents, fragment = split_sentences(text)
    n_units = len(sents) + int(fragment)
    if n_units == 0:
        return RewardBreakdown(-1.0, 0, 0)
    seen: set[str] = set()
    total, valid = 0.0, 0
    for s in sents:
        words = s.split()[:-1]
        if s in seen or not is_sentence(words):
            total -= 1.0
        else:
            total += sentence_score(s)
            valid += 1
        seen.add(s)
    if fragment:
        total -= 1.0
    return RewardBreakdown(total / n_units, n_units, valid)


def is_well_formed(text: str) -> bool:
    b = gold_reward(text)
    return b.n_units > 0 and b.n_valid == b.n_units


# ----------------------------------------------------------------------------- writer


class Writer:
    """Samples reviews from the grammar: the task's stand-in for human-written text.

    Each review has a polarity q ~ U(0, 1): a sentiment slot is filled with a positive
    word with probability q and a negative one otherwise, so reviews range from scathing
    to glowing and their gold rewards spread over [-1, 1].
    """

    def __init__(self, rng: random.Random, p_sentiment: float = 0.6, p_neg: float = 0.15,
                 p_intens: float = 0.2, max_sentences: int = 3):
        self.rng = rng
        self.p_sentiment = p_sentiment
        self.p_neg = p_neg
        self.p_intens = p_intens
        self.max_sentences = max_sentences

    def _pick(self, neutral, pos, neg, q: float | None) -> str:
        r = self.rng
        if q is None or r.random() >= self.p_sentiment:
            return r.choice(neutral)
        return r.choice(pos) if r.random() < q else r.choice(neg)

    def _np(self, q: float | None, max_adj: int = 2) -> list[str]:
        r = self.rng
        out = [r.choice(DET)]
        for _ in range(r.choice(range(max_adj + 1))):
            if r.random() < self.p_intens and q is not None:
                out.append(r.choice(INTENS))
            out.append(self._pick(ADJ_NEUTRAL, ADJ_POS, ADJ_NEG, q))
        out.append(r.choice(NOUN))
        return out

    def sentence(self, q: float | None) -> str:
        """One sentence; q=None gives a sentiment-free sentence (used for prompts)."""
        r = self.rng
        out = self._np(q, max_adj=1 if q is None else 2)
        kind = r.random()
        if kind < 0.4:
            out.append(self._pick(TVERB_NEUTRAL, TVERB_POS, TVERB_NEG, q))
            out += self._np(q, max_adj=1)
        elif kind < 0.8:
            out.append(r.choice(COP))
            if q is not None and r.random() < self.p_neg:
                out.append("not")
            if q is not None and r.random() < self.p_intens:
                out.append(r.choice(INTENS))
            out.append(self._pick(ADJ_NEUTRAL, ADJ_POS, ADJ_NEG, q))
        else:
            out.append(self._pick(IVERB_NEUTRAL, IVERB_POS, IVERB_NEG, q))
            if r.random() < 0.5:
                out.append(self._pick(ADVERB_NEUTRAL, ADVERB_POS, ADVERB_NEG, q))
        return " ".join(out + ["."])

    def prompt(self) -> str:
        return self.sentence(None)

    def review(self, q: float | None = None) -> str:
        if q is None:
            q = self.rng.random()
        n = self.rng.randint(1, self.max_sentences)
        sents: list[str] = []
        while len(sents) < n:
            s = self.sentence(q)
            if s not in sents:
                sents.append(s)
        return " ".join(sents)
