-- Membership the members can check (issue 14): every membership or role change may carry a
-- `commit`, a statement signed by the acting device that the server stores as it came and serves
-- back through GET /v1/conversations/{id}/events, so that members verify the chain of changes
-- themselves instead of trusting the server's member list.

-- The acting device (its session id). No foreign key on purpose: the history outlives the device
-- (a session that ends is deleted by retention); the account purge clears it with `actor_id`.
ALTER TABLE membership_events ADD COLUMN actor_device_id uuid;
-- Opaque to the server; the API refuses more than 16 KiB, the table holds to the same bound.
ALTER TABLE membership_events ADD COLUMN commit bytea CHECK (length(commit) BETWEEN 1 AND 16384);

-- A role change (PUT /v1/conversations/{id}/members/{user_id}, or the heir who becomes owner when
-- the last owner leaves) is an event too, so a verifier knows each actor's role at every point.
ALTER TABLE membership_events DROP CONSTRAINT membership_events_kind_check;
ALTER TABLE membership_events ADD CONSTRAINT membership_events_kind_check
    CHECK (kind IN ('created', 'invited', 'joined', 'declined', 'left', 'removed', 'role_changed'));
