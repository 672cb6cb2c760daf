-- Key directory and device mailboxes (Keys service). Only public keys and opaque ciphertext.
-- A device is a session: everything here belongs to a session id and goes when the session ends.

CREATE TABLE device_keys (
    device_id                uuid PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    user_id                  uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    identity_key             bytea NOT NULL CHECK (length(identity_key) = 32),
    signing_key              bytea NOT NULL CHECK (length(signing_key) = 32),
    signed_prekey_id         bigint NOT NULL CHECK (signed_prekey_id BETWEEN 0 AND 4294967295),
    signed_prekey            bytea NOT NULL CHECK (length(signed_prekey) = 32),
    signed_prekey_signature  bytea NOT NULL CHECK (length(signed_prekey_signature) = 64),
    created_at               timestamptz NOT NULL,
    updated_at               timestamptz NOT NULL
);
CREATE INDEX device_keys_by_user ON device_keys (user_id);

-- One-time prekeys are handed out once, oldest first (by upload order), and kept (claimed) so that
-- a re-upload of a used key_id with other bytes is still recognised as a conflict.
CREATE TABLE one_time_prekeys (
    device_id    uuid NOT NULL REFERENCES device_keys (device_id) ON DELETE CASCADE,
    key_id       bigint NOT NULL CHECK (key_id BETWEEN 0 AND 4294967295),
    public_key   bytea NOT NULL CHECK (length(public_key) = 32),
    upload_seq   bigint GENERATED ALWAYS AS IDENTITY,
    created_at   timestamptz NOT NULL,
    claimed_at   timestamptz,
    PRIMARY KEY (device_id, key_id)
);
CREATE INDEX one_time_prekeys_available ON one_time_prekeys (device_id, upload_seq) WHERE claimed_at IS NULL;

-- Device-to-device envelopes, queued per recipient device until acknowledged or expired.
CREATE TABLE device_messages (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recipient_device_id  uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    sender_user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    sender_device_id     uuid NOT NULL,
    content_type         text NOT NULL,
    ciphertext           bytea NOT NULL,
    nonce                bytea NOT NULL,
    auth_tag             bytea NOT NULL,
    created_at           timestamptz NOT NULL,
    expires_at           timestamptz NOT NULL
);
CREATE INDEX device_messages_queue ON device_messages (recipient_device_id, id);
CREATE INDEX device_messages_expiry ON device_messages (expires_at);

-- How many queued device messages expired unread, so the recipient learns something was dropped.
CREATE TABLE device_message_gaps (
    recipient_device_id  uuid PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    dropped              integer NOT NULL,
    first_dropped_at     timestamptz NOT NULL
);

-- Key changes of a user's devices, for delivery as `keys_changed` events to the users who share a
-- conversation with them (delivered by the realtime layer).
CREATE TABLE key_changes (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id   uuid NOT NULL,
    change      text NOT NULL CHECK (change IN ('device_added', 'identity_changed', 'signed_prekey_changed', 'device_removed')),
    created_at  timestamptz NOT NULL
);
CREATE INDEX key_changes_by_user ON key_changes (user_id, id);

-- Whatever ends a session (logout, revocation, refresh reuse, account disable or erasure) ends its
-- device in the same transaction: keys, queued device messages and gap marker go, and the removal
-- is recorded for the user's contacts. A trigger makes this hold for every code path.
CREATE FUNCTION end_device() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM device_keys WHERE device_id = NEW.id) THEN
        DELETE FROM device_keys WHERE device_id = NEW.id;
        INSERT INTO key_changes (user_id, device_id, change, created_at)
        VALUES (NEW.user_id, NEW.id, 'device_removed', NEW.revoked_at);
    END IF;
    DELETE FROM device_messages WHERE recipient_device_id = NEW.id;
    DELETE FROM device_message_gaps WHERE recipient_device_id = NEW.id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER sessions_end_device
    AFTER UPDATE OF revoked_at ON sessions
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION end_device();
