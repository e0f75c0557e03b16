-- Analytics warehouse sync (lib/mpp/warehouse): how far each warehouse has the facts, and the
-- erasures it still has to apply. A warehouse is named by mpp.warehouse.warehouse_id
-- ("sqlite:/path", "bigquery:project.dataset").

-- Facts are sent again from synced_through minus an overlap (the load is a MERGE by id), so a
-- transaction that committed late with an earlier recorded_at is not missed.
CREATE TABLE analytics_warehouse_sync (
    warehouse       text NOT NULL,
    table_name      text NOT NULL,
    synced_through  timestamptz NOT NULL,
    synced_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (warehouse, table_name)
);

-- Users erased from the Postgres analytics tables whose rows the warehouse may still hold;
-- a row is removed once the warehouse deleted them.
CREATE TABLE analytics_pending_erasures (
    warehouse     text NOT NULL,
    user_id       text NOT NULL,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (warehouse, user_id)
);

CREATE INDEX message_facts_recorded ON message_facts (recorded_at);
CREATE INDEX feedback_facts_recorded ON feedback_facts (recorded_at);
CREATE INDEX feedback_facts_day ON feedback_facts (day, channel);
