-- The recommender's feedback table replaces recommender_exclusions (0004).
--
-- Decision: the daily frequency cap counts impressions (what a client reported as shown), not
-- what the recommender served. An answer is recomputed whenever the user says something new,
-- so counting served answers exhausted every capped campaign after a few messages (measured
-- in tests/integration/test_recommender_outages.py), while the catalog's cap is "impressions
-- per user per day" (mpp.v1.Campaign.daily_frequency_cap).

-- Feedback received through the recommender's own API (gRPC RecordFeedback, POST /feedback),
-- so that it applies at once: conversions and dismissals exclude the campaign, impressions
-- count toward the cap, before the analytics service has turned the event (published on
-- feedback.events) into a feedback_facts row. The rules count a feedback_id once if both hold it.
CREATE TABLE recommender_feedback (
    feedback_id  text PRIMARY KEY,
    user_id      text NOT NULL,
    campaign_id  text NOT NULL,
    kind         text NOT NULL
                 CHECK (kind IN ('impression', 'click', 'conversion', 'dismissal')),
    occurred_at  timestamptz NOT NULL,
    day          date NOT NULL                 -- UTC day of occurred_at
);
CREATE INDEX recommender_feedback_user ON recommender_feedback (user_id, kind, day);

DROP TABLE recommender_exclusions;

COMMENT ON TABLE recommendation_log IS
    'What the recommender served: one row per item of each computed answer (cache hits add '
    'nothing). An audit record for analysis; the frequency cap counts impressions (0006).';
