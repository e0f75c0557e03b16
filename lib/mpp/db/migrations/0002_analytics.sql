-- Analytics: facts keyed by their stable ids (a replay inserts nothing) and the serving
-- aggregates, which are recomputed from the facts for every key a batch touched, so that they
-- always equal a plain recomputation (services/analytics).

-- One row per message (mpp.v1.EnrichedMessage).
CREATE TABLE message_facts (
    message_id    text PRIMARY KEY,
    user_id       text NOT NULL,
    occurred_at   timestamptz NOT NULL,
    day           date NOT NULL,               -- UTC day of occurred_at
    channel       text NOT NULL DEFAULT '',
    intents       text[] NOT NULL DEFAULT '{}',  -- tagged intents, best first; no "unknown"
    campaign_ids  text[] NOT NULL DEFAULT '{}',  -- campaigns the message is about
    recorded_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX message_facts_user ON message_facts (user_id);
CREATE INDEX message_facts_day ON message_facts (day, channel);
CREATE INDEX message_facts_campaigns ON message_facts USING gin (campaign_ids);

-- One row per feedback event (mpp.v1.FeedbackEvent).
CREATE TABLE feedback_facts (
    feedback_id        text PRIMARY KEY,
    user_id            text NOT NULL,
    campaign_id        text NOT NULL,
    kind               text NOT NULL
                       CHECK (kind IN ('impression', 'click', 'conversion', 'dismissal')),
    occurred_at        timestamptz NOT NULL,
    day                date NOT NULL,
    channel            text NOT NULL DEFAULT '',
    recommendation_id  text NOT NULL DEFAULT '',
    recorded_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feedback_facts_user ON feedback_facts (user_id, campaign_id, kind, day);
CREATE INDEX feedback_facts_campaign ON feedback_facts (campaign_id, day);

-- Serving aggregates.
CREATE TABLE user_engagement (
    user_id            text PRIMARY KEY,
    messages           bigint NOT NULL,
    active_days        integer NOT NULL,
    first_seen         timestamptz NOT NULL,
    last_seen          timestamptz NOT NULL,
    top_intents        text[] NOT NULL DEFAULT '{}',  -- most frequent first, at most 5
    campaigns_engaged  text[] NOT NULL DEFAULT '{}',  -- messages about it, clicks or conversions
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE campaign_performance_daily (
    campaign_id  text NOT NULL,
    day          date NOT NULL,
    messages     bigint NOT NULL DEFAULT 0,
    impressions  bigint NOT NULL DEFAULT 0,
    clicks       bigint NOT NULL DEFAULT 0,
    conversions  bigint NOT NULL DEFAULT 0,
    dismissals   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, day)
);

-- Totals over all days; ctr = clicks / impressions, conversion_rate = conversions / clicks
-- (both 0 when the denominator is 0).
CREATE TABLE campaign_performance (
    campaign_id      text PRIMARY KEY,
    messages         bigint NOT NULL DEFAULT 0,
    impressions      bigint NOT NULL DEFAULT 0,
    clicks           bigint NOT NULL DEFAULT 0,
    conversions      bigint NOT NULL DEFAULT 0,
    dismissals       bigint NOT NULL DEFAULT 0,
    ctr              double precision NOT NULL DEFAULT 0,
    conversion_rate  double precision NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE daily_activity (
    day           date NOT NULL,
    channel       text NOT NULL,   -- '' when the event named none
    messages      bigint NOT NULL,
    active_users  bigint NOT NULL,
    PRIMARY KEY (day, channel)
);
