-- Operators (Operator service): the incident log for breach handling and the audit trail of every
-- operator action. The operator role itself is users.role (0001), granted only by `veil operator`.
-- Nothing here holds message content, keys or IP addresses.

-- Append-only, enforced here rather than trusted to the application: no row of these tables may
-- change or go, with one exception. References to users are ON DELETE SET NULL, so that purging
-- an account removes its id from every row while the record of what happened stays; the trigger
-- therefore lets through exactly an UPDATE whose only changes set the columns named in TG_ARGV to
-- NULL. (A superuser or the table owner can still disable triggers; in production the application
-- role should own none of these tables.)
CREATE FUNCTION refuse_changes_except_user_erasure() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_row  jsonb;
    new_row  jsonb;
    col      text;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        old_row := to_jsonb(OLD);
        new_row := to_jsonb(NEW);
        FOR col IN SELECT jsonb_object_keys(new_row) LOOP
            IF new_row -> col IS DISTINCT FROM old_row -> col
               AND NOT (col = ANY (TG_ARGV) AND new_row -> col = 'null'::jsonb) THEN
                RAISE EXCEPTION '% is append-only: column % cannot be changed', TG_TABLE_NAME, col
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
        END LOOP;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

-- One incident: what happened, what it touches and what was done, as first recorded. Later
-- knowledge goes into incident_entries, never into this row.
CREATE TABLE incidents (
    id           uuid PRIMARY KEY,
    -- Human-friendly and ordered ("incident 3"); also the list cursor.
    number       bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    title        text NOT NULL,
    scope        text NOT NULL,
    mitigation   text NOT NULL,
    -- When the breach became known: the clock for the 72-hour notice to the supervisory authority.
    detected_at  timestamptz NOT NULL,
    created_at   timestamptz NOT NULL,
    created_by   uuid REFERENCES users (id) ON DELETE SET NULL
);

-- Timestamped additions: updates, mitigation steps and notifications (of users, by the service,
-- or of an authority, recorded by an operator).
CREATE TABLE incident_entries (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id  uuid NOT NULL REFERENCES incidents (id),
    kind         text NOT NULL CHECK (kind IN ('update', 'mitigation', 'notification')),
    body         text NOT NULL,
    created_at   timestamptz NOT NULL,
    author_id    uuid REFERENCES users (id) ON DELETE SET NULL
);
CREATE INDEX incident_entries_by_incident ON incident_entries (incident_id, id);

-- When each affected user was told. SET NULL rather than CASCADE: the log keeps that someone was
-- told at that time (the count the incident needs) without keeping who, once the account is gone.
CREATE TABLE incident_notifications (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id  uuid NOT NULL REFERENCES incidents (id),
    user_id      uuid REFERENCES users (id) ON DELETE SET NULL,
    notified_at  timestamptz NOT NULL
);
CREATE INDEX incident_notifications_by_incident ON incident_notifications (incident_id, user_id);
CREATE INDEX incident_notifications_by_user ON incident_notifications (user_id);

-- Every operator action, reads included, written in the transaction of the action itself.
-- operator_id is NULL for role changes made with the command-line tool (and once an operator's
-- account is purged).
CREATE TABLE operator_audit (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    operator_id     uuid REFERENCES users (id) ON DELETE SET NULL,
    action          text NOT NULL CHECK (action IN (
                        'role_granted', 'role_revoked',
                        'users_listed', 'user_viewed', 'user_suspended', 'user_reinstated',
                        'user_sessions_revoked',
                        'incidents_listed', 'incident_viewed', 'incident_created', 'incident_entry_added',
                        'incident_users_notified', 'audit_viewed')),
    target_user_id  uuid REFERENCES users (id) ON DELETE SET NULL,
    incident_id     uuid REFERENCES incidents (id),
    created_at      timestamptz NOT NULL
);
CREATE INDEX operator_audit_by_operator ON operator_audit (operator_id);
CREATE INDEX operator_audit_by_target ON operator_audit (target_user_id);

CREATE TRIGGER incidents_append_only
    BEFORE UPDATE OR DELETE ON incidents
    FOR EACH ROW EXECUTE FUNCTION refuse_changes_except_user_erasure('created_by');
CREATE TRIGGER incidents_no_truncate
    BEFORE TRUNCATE ON incidents
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_changes_except_user_erasure();
CREATE TRIGGER incident_entries_append_only
    BEFORE UPDATE OR DELETE ON incident_entries
    FOR EACH ROW EXECUTE FUNCTION refuse_changes_except_user_erasure('author_id');
CREATE TRIGGER incident_entries_no_truncate
    BEFORE TRUNCATE ON incident_entries
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_changes_except_user_erasure();
CREATE TRIGGER incident_notifications_append_only
    BEFORE UPDATE OR DELETE ON incident_notifications
    FOR EACH ROW EXECUTE FUNCTION refuse_changes_except_user_erasure('user_id');
CREATE TRIGGER incident_notifications_no_truncate
    BEFORE TRUNCATE ON incident_notifications
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_changes_except_user_erasure();
CREATE TRIGGER operator_audit_append_only
    BEFORE UPDATE OR DELETE ON operator_audit
    FOR EACH ROW EXECUTE FUNCTION refuse_changes_except_user_erasure('operator_id', 'target_user_id');
CREATE TRIGGER operator_audit_no_truncate
    BEFORE TRUNCATE ON operator_audit
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_changes_except_user_erasure();
