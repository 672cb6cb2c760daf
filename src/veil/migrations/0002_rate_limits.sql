-- Shared rate-limiter state (GCRA): one row per limited key, holding its theoretical arrival time
-- in epoch seconds. Keys are hashed client addresses or account ids with a purpose prefix; rows
-- whose tat has passed carry no information and are swept.
CREATE TABLE rate_limits (
    key     text PRIMARY KEY,
    tat     double precision NOT NULL
);
CREATE INDEX rate_limits_by_tat ON rate_limits (tat);
