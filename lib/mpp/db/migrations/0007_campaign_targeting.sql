-- Campaign targeting (mpp.v1.Campaign channels, locales): where a campaign may be shown.
-- Empty means anywhere, which is what every campaign loaded before this migration keeps.
ALTER TABLE campaigns
    ADD COLUMN channels text[] NOT NULL DEFAULT '{}',
    ADD COLUMN locales  text[] NOT NULL DEFAULT '{}';
