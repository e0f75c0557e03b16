"""Intent catalogs, the nearest-examples tagger and the campaign linker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from mpp.catalog import Campaign, default_campaigns_path, parse_campaigns
from mpp.embedding import Embedder
from mpp.intents import (
    UNKNOWN,
    CampaignLinker,
    IntentCatalog,
    IntentCatalogError,
    IntentClassifier,
    LinkSource,
    ScoredIntent,
)

TINY = IntentCatalog(
    {
        "travel": ("we are flying to Rome", "I booked a hotel by the sea", "my trip to Peru"),
        "food": ("let's order pizza tonight", "I cooked pasta for dinner", "best sushi in town"),
        "pets": ("my dog loves the park", "our cat sleeps all day", "taking the puppy to the vet"),
    }
)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


@pytest.fixture(scope="module")
def tiny(embedder: Embedder) -> IntentClassifier:
    return IntentClassifier(embedder, TINY, threshold=0.3, max_intents=2)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- the catalog file ---------------------------------------------------------------------------


def test_default_catalog_covers_every_campaign_intent_and_conversation() -> None:
    catalog = IntentCatalog.default()
    campaign_intents = {i for c in parse_campaigns(default_campaigns_path()) for i in c.intents}
    assert campaign_intents <= set(catalog.names)
    assert {"greeting", "smalltalk"} <= set(catalog.names)
    assert all(10 <= len(examples) <= 20 for examples in catalog.intents.values())
    every = [e for examples in catalog.intents.values() for e in examples]
    assert len(every) == len(set(every)), "an example is listed twice"


def test_jsonl_errors_name_the_line_and_the_field(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "intents.jsonl",
        "\n".join(
            [
                json.dumps({"intent": "travel", "examples": ["a trip"]}),
                "{not json",
                json.dumps({"intent": "food"}),
                json.dumps({"intent": " padded", "examples": ["x"]}),
                json.dumps({"intent": "unknown", "examples": ["x"]}),
                json.dumps({"intent": "travel", "examples": ["again"]}),
                json.dumps({"intent": "pets", "examples": ["dog", ""]}),
                json.dumps({"intent": "pets\n", "examples": ["a trailing newline"]}),
            ]
        ),
    )
    with pytest.raises(IntentCatalogError) as info:
        IntentCatalog.load(path)
    message = str(info.value)
    assert f"{path}:2: not valid JSON" in message
    assert f"{path}:3: examples: expected a non-empty list" in message
    assert f"{path}:4: intent: ' padded' is not an intent name" in message
    assert f"{path}:5: intent: 'unknown' is reserved" in message
    assert f"{path}:6: intent: 'travel' already defined on line 1" in message
    assert f"{path}:7: examples[1]: expected a non-empty string" in message
    assert f"{path}:8: intent: 'pets\\n' is not an intent name" in message


def test_csv_in_the_banking77_layout_groups_rows_by_category(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "intents.csv",
        "text,category\nwhere is my card?,card_arrival\n"
        'my card has not come,card_arrival\n"refund, please",refund?\n',
    )
    catalog = IntentCatalog.load(path)
    assert catalog.intents == {
        "card_arrival": ("where is my card?", "my card has not come"),
        "refund?": ("refund, please",),
    }
    assert catalog.size == 3 and catalog.source == str(path)


def test_csv_errors_name_the_line_and_the_field(tmp_path: Path) -> None:
    bad_header = _write(tmp_path, "a.csv", "message,label\nhi,greeting\n")
    with pytest.raises(IntentCatalogError, match=r"a\.csv:1: header: expected the columns"):
        IntentCatalog.load(bad_header)
    rows = "".join(f"example {i},\n" for i in range(30))
    bad_rows = _write(tmp_path, "b.csv", "text,category\n,travel\n" + rows)
    with pytest.raises(IntentCatalogError) as info:
        IntentCatalog.load(bad_rows)
    message = str(info.value)
    assert f"{bad_rows}:2: text: empty example" in message
    assert f"{bad_rows}:3: category: '' is not an intent name" in message
    # 31 problems: the first 20 and a count, not a wall of text.
    assert "... and 11 more" in message


def test_a_missing_file_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(IntentCatalogError, match="MPP_EMBEDDER__INTENT_CATALOG"):
        IntentCatalog.load(tmp_path / "nope.jsonl")


# -- tagging ------------------------------------------------------------------------------------


def test_tiny_catalog_tags_the_nearest_intent_first(tiny: IntentClassifier) -> None:
    results = tiny.classify(
        ["we flew to Lisbon and stayed in a hotel", "I made lasagna", "my cat sleeps on the sofa"]
    )
    assert [r[0].intent for r in results] == ["travel", "food", "pets"]
    for ranked in results:
        assert 1 <= len(ranked) <= 2
        assert all(isinstance(s, ScoredIntent) and s.score >= 0.3 for s in ranked)
        assert [s.score for s in ranked] == sorted((s.score for s in ranked), reverse=True)


def test_score_is_the_mean_of_the_three_best_example_cosines(
    embedder: Embedder, tiny: IntentClassifier
) -> None:
    message = "a cheap flight to Tokyo"
    vector = embedder.encode([message])
    examples = embedder.encode(list(TINY.intents["travel"]))
    expected = float(np.sort(examples @ vector[0])[-3:].mean())
    scores = tiny.scores(vector)
    assert scores[0, tiny.names.index("travel")] == pytest.approx(expected, abs=1e-5)
    # top_k=1 is plain 1-NN: the best single example.
    one_nn = IntentClassifier(embedder, TINY, None, top_k=1).scores(vector)
    assert one_nn[0, 0] == pytest.approx(float((examples @ vector[0]).max()), abs=1e-5)


def test_below_the_threshold_a_message_is_unknown(embedder: Embedder) -> None:
    strict = IntentClassifier(embedder, TINY, threshold=0.95)
    (result,) = strict.classify(["the quarterly tax report is due"])
    assert len(result) == 1 and result[0].intent == UNKNOWN
    assert result[0].score < 0.95
    # The score of "unknown" is the best intent's, so a reader sees how far it was.
    best = float(strict.scores(embedder.encode(["the quarterly tax report is due"])).max())
    assert result[0].score == pytest.approx(best, abs=1e-6)
    # No threshold: never unknown, always the ranked intents.
    (open_result,) = IntentClassifier(embedder, TINY, None).classify(["the quarterly report"])
    assert UNKNOWN not in [s.intent for s in open_result] and len(open_result) == 3


def test_only_intents_above_the_threshold_are_listed(embedder: Embedder) -> None:
    classifier = IntentClassifier(embedder, TINY, threshold=0.3, max_intents=3)
    vectors = embedder.encode(["my dog ate my pizza on the trip"])
    scores = classifier.scores(vectors)[0]
    (result,) = classifier.classify_vectors(vectors)
    expected = {n for n, s in zip(classifier.names, scores, strict=True) if s >= 0.3}
    assert {s.intent for s in result} == expected


def test_confidence_is_calibrated_on_the_catalog_and_gates_the_secondary_intents(
    embedder: Embedder,
) -> None:
    catalog = IntentCatalog.default()
    plain = IntentClassifier(embedder, catalog, threshold=0.3, max_intents=3)
    # Fitted, not the grid's ends: a cosine-scale temperature, far below 1.
    assert 0.002 < plain.temperature < 0.5
    messages = [
        "my dog ate my pizza on the trip",
        "we are flying to Lisbon and need a hotel",
        "is there a discount on running shoes this weekend",
    ]
    vectors = embedder.encode(messages)
    scores = plain.scores(vectors)
    probabilities = plain.probabilities(scores)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (probabilities.argmax(axis=1) == scores.argmax(axis=1)).all()
    # A clear message is confident: its first intent takes most of the probability.
    assert probabilities[1].max() > 0.5

    def listed(level: float | None) -> list[list[str]]:
        gated = IntentClassifier(
            embedder, catalog, threshold=0.3, max_intents=3, secondary_confidence=level
        )
        return [[s.intent for s in r] for r in gated.classify_vectors(vectors)]

    ungated = [[s.intent for s in r] for r in plain.classify_vectors(vectors)]
    assert listed(None) == listed(0.0) == ungated
    # At 1.0 no secondary can qualify: the first intent alone (or unknown), as ungated.
    assert [r[:1] for r in ungated] == listed(1.0)
    middle = listed(0.3)
    names = plain.names
    for row, got, full in zip(probabilities, middle, ungated, strict=True):
        assert got[0] == full[0]
        for intent in got[1:]:
            assert row[names.index(intent)] >= 0.3
        for intent in set(full) - set(got):
            assert row[names.index(intent)] < 0.3


# -- campaign links -----------------------------------------------------------------------------


def _campaigns() -> list[Campaign]:
    return [
        Campaign(
            campaign_id="beach",
            name="Summer getaways",
            description="Flights and beach hotels for your vacation.",
        ),
        Campaign(
            campaign_id="pizza", name="Free delivery", description="Pizza and sushi delivered."
        ),
        Campaign(campaign_id="pets", name="Pet care box", description="Food and toys for dogs."),
        Campaign(
            campaign_id="old-beach",
            name="Last year's beach trips",
            description="Flights and beach hotels for your vacation.",
            active=False,
        ),
        Campaign(
            campaign_id="ended-beach",
            name="Beach holidays",
            description="Flights and beach hotels for your vacation.",
            ends_at=datetime(2020, 1, 1, tzinfo=UTC),
        ),
    ]


def test_the_events_campaign_comes_first_then_similar_live_ones(embedder: Embedder) -> None:
    linker = CampaignLinker(embedder, _campaigns(), threshold=0.3, max_links=3)
    assert [c.campaign_id for c in linker.campaigns] == ["beach", "ended-beach", "pets", "pizza"]
    text = "we want a beach hotel for our summer vacation"
    (own_first,) = linker.link([text], ["pizza"])
    assert own_first[0] == ("pizza", 1.0, LinkSource.EVENT)
    assert own_first[1].campaign_id == "beach" and own_first[1].source is LinkSource.SIMILARITY
    assert own_first[1].score >= 0.3
    linked = [link.campaign_id for link in own_first]
    assert len(linked) == len(set(linked)), "the event's campaign is not repeated"
    # Inactive and ended campaigns never link by similarity, however close.
    assert "old-beach" not in linked and "ended-beach" not in linked
    # Before its end date, the ended campaign was live and linked.
    (back_then,) = linker.link([text], [""], now=datetime(2019, 6, 1, tzinfo=UTC))
    assert "ended-beach" in [link.campaign_id for link in back_then]


def test_an_unknown_event_campaign_is_kept_and_nothing_links_below_the_threshold(
    embedder: Embedder,
) -> None:
    linker = CampaignLinker(embedder, _campaigns(), threshold=0.9, max_links=3)
    (links,) = linker.link(["we want a beach hotel for our summer vacation"], ["not-in-catalog"])
    assert links == [("not-in-catalog", 1.0, LinkSource.EVENT)]
    (none,) = linker.link(["we want a beach hotel"], [""])
    assert none == []


def test_max_links_caps_similarity_links_only(embedder: Embedder) -> None:
    linker = CampaignLinker(embedder, _campaigns(), threshold=-1.0, max_links=2)
    (links,) = linker.link(["anything at all"], ["own"])
    assert [link.source for link in links] == [
        LinkSource.EVENT,
        LinkSource.SIMILARITY,
        LinkSource.SIMILARITY,
    ]
    assert links[1].score >= links[2].score


def test_update_reembeds_only_when_the_catalog_changed(embedder: Embedder) -> None:
    linker = CampaignLinker(embedder, threshold=0.3, max_links=3)
    (before,) = linker.link(["a beach hotel for the summer"], [""])
    assert before == []
    assert linker.update(_campaigns()) is True
    assert linker.update(list(reversed(_campaigns()))) is False
    (after,) = linker.link(["a beach hotel for the summer"], [""])
    assert after and after[0].campaign_id == "beach"
    changed = [*_campaigns()[:2], _campaigns()[2].model_copy(update={"name": "Dog treats"})]
    assert linker.update(changed) is True
    assert linker.similarities(embedder.encode(["x"])).shape == (1, 3)


def test_campaign_dates_are_checked_at_link_time(embedder: Embedder) -> None:
    soon = datetime.now(UTC) + timedelta(days=1)
    future = Campaign(
        campaign_id="future",
        name="Beach holidays",
        description="Beach hotels",
        starts_at=soon,
    )
    linker = CampaignLinker(embedder, [future], threshold=0.3, max_links=3)
    assert linker.link(["beach hotels"], [""]) == [[]]
    (later,) = linker.link(["beach hotels"], [""], now=soon + timedelta(hours=1))
    assert [link.campaign_id for link in later] == ["future"]
