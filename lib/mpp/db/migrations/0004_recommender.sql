-- The recommender's own tables (services/recommender).

-- What the recommender served: one row per item of each computed answer (a cache hit returns
-- the same answer, same recommendation_id, and adds nothing). The per-campaign daily frequency
-- cap counts these rows, or the user's impression feedback of that day when it is higher.
CREATE TABLE recommendation_log (
    recommendation_id  text NOT NULL,
    campaign_id        text NOT NULL,
    user_id            text NOT NULL,
    position           integer NOT NULL,
    score              double precision NOT NULL,
    strategy           text NOT NULL,
    served_at          timestamptz NOT NULL,
    day                date NOT NULL,                -- UTC day of served_at
    PRIMARY KEY (recommendation_id, campaign_id)
);
CREATE INDEX recommendation_log_user_day ON recommendation_log (user_id, day, campaign_id);

-- Conversions and dismissals received through the recommender's own API: they take effect at
-- once, before the analytics service has turned the feedback event into a feedback_facts row.
CREATE TABLE recommender_exclusions (
    user_id      text NOT NULL,
    campaign_id  text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('conversion', 'dismissal')),
    feedback_id  text NOT NULL,
    occurred_at  timestamptz NOT NULL,
    PRIMARY KEY (user_id, campaign_id, kind)
);

-- Users who asked to be forgotten, and when, by the SHA-256 (hex) of the UTF-8 user_id, so that
-- the record keeps no readable trace of them (mpp_recommender.erasure.user_hash). Writers may
-- skip any message of such a user whose timestamp is not after erased_at: a message still in
-- the pipeline when the erasure ran.
CREATE TABLE erased_users (
    user_hash   text PRIMARY KEY CHECK (user_hash ~ '^[0-9a-f]{64}$'),
    request_id  text NOT NULL,
    erased_at   timestamptz NOT NULL
);
