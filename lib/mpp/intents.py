"""Intent tagging and campaign linking by nearest examples in embedding space.

The intent catalog is a file a marketer edits, in either format:

- JSON Lines, one intent per line: ``{"intent": "travel", "examples": ["I'm flying to Lisbon",
  ...]}``;
- CSV with a header and the columns ``text,category`` (one example per row, as in the
  banking77 data set); ``intent`` is accepted for ``category``.

Intent names are 1-100 printable characters without surrounding spaces; ``unknown`` is reserved
for messages that match nothing. Errors name the file, the line and the field.

Scoring (``IntentClassifier``): an intent's score for a message is the mean cosine similarity
of the message to that intent's ``top_k`` (3) most similar examples. It stays on the cosine
scale, so one threshold means the same thing for every catalog; against plain 1-NN (the best
single example) it is as accurate or slightly better and less swayed by one odd example
(``bench/intent_accuracy.py`` measures both).

Confidence: a message's scores turned into probabilities over the catalog's intents, a softmax
of score / T, where the temperature T is fitted when the classifier is built: the T that best
predicts each catalog example's own intent from its scores with the example itself left out
(the lowest mean negative log-likelihood on a grid). A message's second and third intents are
listed only when their probability reaches ``secondary_confidence``: the catalog says the
message is torn between them, not merely that they are the next nearest. "unknown" stays on
the cosine scale (``threshold``): probabilities over the catalog's intents sum to 1 even for
a message far from all of them.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from mpp.catalog import Campaign
from mpp.embedding import Vectors

UNKNOWN = "unknown"
INTENT_NAME_PATTERN = re.compile(r"^\S(?:[^\x00-\x1f\x7f]{0,98}\S)?$")
# A file with thousands of bad rows would otherwise produce an unreadable message.
MAX_PROBLEMS_SHOWN = 20


class TextEncoder(Protocol):
    """What the classifier and the linker need from ``mpp.embedding.Embedder``."""

    @property
    def dimension(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> Vectors: ...


class IntentCatalogError(ValueError):
    """An intent catalog file is invalid; the message names each line and field."""


@dataclass(frozen=True)
class IntentCatalog:
    """Intent name -> example utterances, in file order."""

    intents: dict[str, tuple[str, ...]]
    source: str = "<memory>"

    def __post_init__(self) -> None:
        if not self.intents:
            raise IntentCatalogError(f"{self.source}: the intent catalog has no intents")

    @property
    def names(self) -> list[str]:
        return list(self.intents)

    @property
    def size(self) -> int:
        """The number of examples over all intents."""
        return sum(len(examples) for examples in self.intents.values())

    @classmethod
    def default_path(cls) -> Path:
        return Path(str(resources.files("mpp.data").joinpath("intents.jsonl")))

    @classmethod
    def default(cls) -> IntentCatalog:
        return cls.load(cls.default_path())

    @classmethod
    def load(cls, path: Path) -> IntentCatalog:
        """Read and validate ``path`` (``.csv``: text,category rows; else JSON Lines)."""
        if not path.is_file():
            raise IntentCatalogError(
                f"{path}: no such intent catalog file; set MPP_EMBEDDER__INTENT_CATALOG to a "
                "JSONL or CSV file, or unset it for the packaged default"
            )
        problems: list[str] = []
        intents: dict[str, list[str]] = {}
        if path.suffix.lower() == ".csv":
            _read_csv(path, intents, problems)
        else:
            _read_jsonl(path, intents, problems)
        if problems:
            shown = problems[:MAX_PROBLEMS_SHOWN]
            if len(problems) > len(shown):
                shown.append(f"... and {len(problems) - len(shown)} more")
            raise IntentCatalogError("invalid intent catalog:\n" + "\n".join(shown))
        return cls({name: tuple(examples) for name, examples in intents.items()}, str(path))


def _check_name(where: str, field: str, value: Any, problems: list[str]) -> str | None:
    if not isinstance(value, str) or not INTENT_NAME_PATTERN.fullmatch(value):
        problems.append(
            f"{where}: {field}: {value!r} is not an intent name (1-100 printable characters, "
            "no surrounding spaces)"
        )
        return None
    if value == UNKNOWN:
        problems.append(f"{where}: {field}: {UNKNOWN!r} is reserved for messages without intent")
        return None
    return value


def _read_jsonl(path: Path, intents: dict[str, list[str]], problems: list[str]) -> None:
    defined_on: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: not valid JSON ({exc.msg})")
            continue
        if not isinstance(record, dict):
            problems.append(f"{where}: expected an object with intent and examples")
            continue
        name = _check_name(where, "intent", record.get("intent"), problems)
        examples = record.get("examples")
        if not isinstance(examples, list) or not examples:
            problems.append(f"{where}: examples: expected a non-empty list of strings")
            continue
        bad = [i for i, e in enumerate(examples) if not isinstance(e, str) or not e.strip()]
        if bad:
            problems.append(f"{where}: examples[{bad[0]}]: expected a non-empty string")
            continue
        if name is None:
            continue
        if name in defined_on:
            problems.append(
                f"{where}: intent: {name!r} already defined on line {defined_on[name]}; "
                "merge the two example lists"
            )
            continue
        defined_on[name] = number
        intents[name] = [e.strip() for e in examples]


def _read_csv(path: Path, intents: dict[str, list[str]], problems: list[str]) -> None:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        columns = reader.fieldnames or []
        label = "category" if "category" in columns else "intent"
        if "text" not in columns or label not in columns:
            problems.append(
                f"{path}:1: header: expected the columns text,category (found {columns})"
            )
            return
        rows: Iterator[dict[str, str]] = reader
        for number, row in enumerate(rows, start=2):
            where = f"{path}:{number}"
            text = (row.get("text") or "").strip()
            name = _check_name(where, label, (row.get(label) or "").strip(), problems)
            if not text:
                problems.append(f"{where}: text: empty example")
                continue
            if name is not None:
                intents.setdefault(name, []).append(text)


class ScoredIntent(NamedTuple):
    intent: str
    score: float


class IntentClassifier:
    """Tags messages with their nearest intents, or ``unknown`` below ``threshold``.

    ``classify`` returns, per message, at most ``max_intents`` intents scoring at least
    ``threshold``, best first, the ones after the first only with a probability of at least
    ``secondary_confidence`` (None: no such condition); or ``[("unknown", best score)]`` when
    none scores ``threshold``. A ``threshold`` of None disables "unknown" (always the ranked
    intents; for measuring accuracy).
    """

    def __init__(
        self,
        embedder: TextEncoder,
        catalog: IntentCatalog,
        threshold: float | None,
        *,
        max_intents: int = 3,
        top_k: int = 3,
        secondary_confidence: float | None = None,
    ) -> None:
        self.embedder = embedder
        self.catalog = catalog
        self.threshold = threshold
        self.max_intents = max_intents
        self.top_k = top_k
        self.secondary_confidence = secondary_confidence
        self.names = catalog.names
        texts = [example for examples in catalog.intents.values() for example in examples]
        self._examples = embedder.encode(texts)
        # Examples are grouped by intent: intent i owns columns _bounds[i]:_bounds[i + 1].
        sizes = [len(examples) for examples in catalog.intents.values()]
        self._bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self._owners = np.repeat(np.arange(len(sizes)), sizes)
        self.temperature = self._fit_temperature()

    def scores(self, vectors: Vectors) -> Vectors:
        """``(len(vectors), len(names))``: each message's score for each intent."""
        return self._intent_scores(vectors @ self._examples.T)

    def _intent_scores(self, similarities: Vectors) -> Vectors:
        out = np.empty((len(similarities), len(self.names)), dtype=np.float32)
        for i in range(len(self.names)):
            block = similarities[:, self._bounds[i] : self._bounds[i + 1]]
            k = min(self.top_k, block.shape[1])
            best = np.partition(block, block.shape[1] - k, axis=1)[:, -k:]
            out[:, i] = best.mean(axis=1)
        return out

    def _fit_temperature(self, chunk: int = 1024) -> float:
        """The softmax temperature that best predicts each example's intent from its scores
        against the others (itself left out); 1.0 for a catalog of one intent."""
        if len(self.names) < 2:
            return 1.0
        held_out = np.empty((len(self._examples), len(self.names)), dtype=np.float32)
        for start in range(0, len(self._examples), chunk):
            similarities = self._examples[start : start + chunk] @ self._examples.T
            rows = np.arange(len(similarities))
            similarities[rows, start + rows] = -1.0  # the example itself: the lowest cosine
            held_out[start : start + chunk] = self._intent_scores(similarities)
        rows = np.arange(len(held_out))
        best_t, best_loss = 1.0, np.inf
        for t in np.geomspace(0.002, 1.0, 90):
            logits = held_out / t
            logits -= logits.max(axis=1, keepdims=True)
            log_z = np.log(np.exp(logits).sum(axis=1))
            loss = float(np.mean(log_z - logits[rows, self._owners]))
            if loss < best_loss:
                best_t, best_loss = float(t), loss
        return best_t

    def probabilities(self, scores: Vectors) -> Vectors:
        """Calibrated probabilities over the catalog's intents of ``scores`` rows."""
        logits = scores / self.temperature
        logits = logits - logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        out: Vectors = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
        return out

    def classify_vectors(self, vectors: Vectors) -> list[list[ScoredIntent]]:
        """Ranked intents for already-embedded messages (unit vectors of the same model)."""
        scores = self.scores(vectors)
        probabilities = self.probabilities(scores)
        ranked = np.argsort(-scores, axis=1, kind="stable")[:, : self.max_intents]
        results: list[list[ScoredIntent]] = []
        for row, confidence, order in zip(scores, probabilities, ranked, strict=True):
            best = float(row[order[0]])
            if self.threshold is not None and best < self.threshold:
                results.append([ScoredIntent(UNKNOWN, best)])
                continue
            results.append(
                [
                    ScoredIntent(self.names[j], float(row[j]))
                    for n, j in enumerate(order)
                    if (self.threshold is None or row[j] >= self.threshold)
                    and (
                        n == 0
                        or self.secondary_confidence is None
                        or confidence[j] >= self.secondary_confidence
                    )
                ]
            )
        return results

    def classify(self, texts: Sequence[str]) -> list[list[ScoredIntent]]:
        return self.classify_vectors(self.embedder.encode(texts))


class LinkSource(Enum):
    # The producer named the campaign on the event.
    EVENT = "event"
    # The message's embedding is near the campaign's name and description.
    SIMILARITY = "similarity"


class CampaignLink(NamedTuple):
    campaign_id: str
    score: float
    source: LinkSource


def campaign_text(campaign: Campaign) -> str:
    """What a campaign is embedded as: its name and description."""
    return f"{campaign.name}. {campaign.description}" if campaign.description else campaign.name


class CampaignLinker:
    """Links messages to campaigns: the event's own campaign, then the most similar ones.

    For each message: the event's ``campaign_id`` first when it has one (source EVENT, score
    1.0: the producer said so, whether or not the catalog knows it), then at most
    ``max_links`` other live campaigns whose cosine similarity to the message is at least
    ``threshold``, best first (source SIMILARITY). Liveness (active, within its dates) is
    checked at each call, so a campaign ends on time between catalog refreshes.
    """

    def __init__(
        self,
        embedder: TextEncoder,
        campaigns: Sequence[Campaign] = (),
        *,
        threshold: float,
        max_links: int,
    ) -> None:
        self.embedder = embedder
        self.threshold = threshold
        self.max_links = max_links
        self._campaigns: list[Campaign] = []
        self._vectors: Vectors = np.zeros((0, embedder.dimension), dtype=np.float32)
        self.update(campaigns)

    @property
    def campaigns(self) -> list[Campaign]:
        return list(self._campaigns)

    def update(self, campaigns: Sequence[Campaign]) -> bool:
        """Replace the catalog (only active campaigns are kept). True when it changed."""
        active = sorted((c for c in campaigns if c.active), key=lambda c: c.campaign_id)
        if active == self._campaigns:
            return False
        self._vectors = self.embedder.encode([campaign_text(c) for c in active])
        self._campaigns = active
        return True

    def vectors(self) -> list[tuple[Campaign, Vectors]]:
        """Each active campaign with its embedding (what the recommender searches against)."""
        return list(zip(self._campaigns, self._vectors, strict=True))

    def similarities(self, vectors: Vectors) -> Vectors:
        """``(len(vectors), len(campaigns))`` cosine similarities, in ``campaigns`` order."""
        return vectors @ self._vectors.T

    def link_vectors(
        self,
        vectors: Vectors,
        event_campaign_ids: Sequence[str],
        now: datetime | None = None,
    ) -> list[list[CampaignLink]]:
        """Links per message; ``event_campaign_ids[i]`` is message i's own ("" when none)."""
        now = now or datetime.now(UTC)
        live = np.array([c.is_live(now) for c in self._campaigns], dtype=bool)
        similarities = self.similarities(vectors)
        similarities[:, ~live] = -np.inf
        order = np.argsort(-similarities, axis=1, kind="stable")
        results: list[list[CampaignLink]] = []
        for row, ranked, own in zip(similarities, order, event_campaign_ids, strict=True):
            links = [CampaignLink(own, 1.0, LinkSource.EVENT)] if own else []
            for j in ranked:
                if len(links) - bool(own) >= self.max_links or row[j] < self.threshold:
                    break
                campaign_id = self._campaigns[j].campaign_id
                if campaign_id != own:
                    links.append(CampaignLink(campaign_id, float(row[j]), LinkSource.SIMILARITY))
            results.append(links)
        return results

    def link(
        self, texts: Sequence[str], event_campaign_ids: Sequence[str], now: datetime | None = None
    ) -> list[list[CampaignLink]]:
        return self.link_vectors(self.embedder.encode(texts), event_campaign_ids, now)
