"""Analytics: user engagement, campaign performance and daily activity from the event stream.

The package, bottom to top:

- ``facts``: what an event contributes (``MessageFact``, ``FeedbackFact``) and the definitions
  of the serving aggregates; pure domain, no I/O.
- ``aggregates``: those definitions as PostgreSQL SQL, recomputed for the keys a batch touched.
- ``store``: the PostgreSQL store behind one interface (``AnalyticsStore``, ``write_batch``);
  its docstring is the contract (idempotency, erasure, time zones, units).
- ``reports``: read-only queries over the tables (CLI, web pages, tests).
- ``erasure``: ``erase_user``, the right to be forgotten in PostgreSQL and the warehouse.

The tables' names, columns, types and keys are declared once, in ``mpp.warehouse.tables``.
Decoding Kafka records into facts belongs to the analytics service (``mpp_analytics.records``).
The names below are re-exported for the CLI, the recommender and the tests.
"""

from mpp.analytics.erasure import Erasure, erase_user
from mpp.analytics.facts import (
    ENGAGING_KINDS,
    FEEDBACK_KINDS,
    TOP_INTENTS,
    UNKNOWN_INTENT,
    FeedbackFact,
    MessageFact,
    Touched,
)
from mpp.analytics.reports import (
    activity_report,
    activity_totals,
    campaign_daily,
    campaign_report,
    jsonable,
    read_table,
    summary,
    top_users,
    user_engagement,
)
from mpp.analytics.store import (
    AGGREGATE_LOCK,
    CAMPAIGN_PERFORMANCE_SQL,
    AnalyticsStore,
    WriteResult,
    write_batch,
)
from mpp.warehouse.tables import AGGREGATE_TABLES, FACT_TABLES, KEYS, VOLATILE

__all__ = [
    "AGGREGATE_LOCK",
    "AGGREGATE_TABLES",
    "CAMPAIGN_PERFORMANCE_SQL",
    "ENGAGING_KINDS",
    "FACT_TABLES",
    "FEEDBACK_KINDS",
    "KEYS",
    "TOP_INTENTS",
    "UNKNOWN_INTENT",
    "VOLATILE",
    "AnalyticsStore",
    "Erasure",
    "FeedbackFact",
    "MessageFact",
    "Touched",
    "WriteResult",
    "activity_report",
    "activity_totals",
    "campaign_daily",
    "campaign_report",
    "erase_user",
    "jsonable",
    "read_table",
    "summary",
    "top_users",
    "user_engagement",
    "write_batch",
]
