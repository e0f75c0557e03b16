"""The feature repository of bench/feast_peer.py. Runs in Feast's own virtualenv (built from
bench/feast-requirements.txt), never in the project's: this file imports feast and pandas,
which the project's environment does not have.

    <feast venv>/bin/python bench/feast_repo.py REPO

``REPO`` holds ``feature_store.yaml`` (written by feast_peer.py: the online store is the local
stack's Redis under a project name of the run's own, the registry a file in ``REPO``) and
``rows.json``: ``{user_id: [[campaign_id, score], ...]}``. This script registers the entity
``user`` (join key ``user_id``) and the feature view ``recommendations`` (``campaign_ids``, a
list of strings, and ``scores``, a list of doubles, in the same order) in the registry, what
``feast apply`` does with a definitions file, and writes every row to the online store.

The rows are also written to ``REPO/recommendations.parquet``, the view's offline source, so
that ``feast materialize`` would load the same values; the online write does not read it.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float64, String

VIEW = "recommendations"


def definitions(repo: Path) -> tuple[Entity, FeatureView]:
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.STRING)
    source = FileSource(
        name=f"{VIEW}_source",
        path=str(repo / f"{VIEW}.parquet"),
        timestamp_field="event_timestamp",
    )
    view = FeatureView(
        name=VIEW,
        entities=[user],
        # Long enough that no row of a run ages out while it is served.
        ttl=timedelta(days=365),
        schema=[
            Field(name="campaign_ids", dtype=Array(String)),
            Field(name="scores", dtype=Array(Float64)),
        ],
        online=True,
        source=source,
    )
    return user, view


def frame(rows: dict[str, list[list[object]]]) -> pd.DataFrame:
    now = datetime.now(UTC)
    users = list(rows)
    return pd.DataFrame(
        {
            "user_id": users,
            "campaign_ids": [[str(c) for c, _ in rows[u]] for u in users],
            "scores": [[float(s) for _, s in rows[u]] for u in users],  # type: ignore[arg-type]
            "event_timestamp": [now] * len(users),
        }
    )


def main(repo: Path) -> None:
    rows = json.loads((repo / "rows.json").read_text())
    df = frame(rows)
    df.to_parquet(repo / f"{VIEW}.parquet")
    store = FeatureStore(repo_path=str(repo))
    store.apply(list(definitions(repo)))
    store.write_to_online_store(VIEW, df)
    print(f"wrote {len(df)} rows of {VIEW} to project {store.project}")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
