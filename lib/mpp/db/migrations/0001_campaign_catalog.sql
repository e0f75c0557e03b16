-- The campaign catalog that marketers maintain (mpp.v1.Campaign).
CREATE TABLE campaigns (
    campaign_id          text PRIMARY KEY CHECK (campaign_id ~ '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$'),
    name                 text NOT NULL,
    description          text NOT NULL DEFAULT '',
    active               boolean NOT NULL DEFAULT true,
    starts_at            timestamptz,
    ends_at              timestamptz,
    tags                 text[] NOT NULL DEFAULT '{}',
    intents              text[] NOT NULL DEFAULT '{}',
    daily_frequency_cap  integer NOT NULL DEFAULT 0 CHECK (daily_frequency_cap >= 0),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at IS NULL OR starts_at IS NULL OR ends_at > starts_at)
);

CREATE INDEX campaigns_active ON campaigns (active) WHERE active;
