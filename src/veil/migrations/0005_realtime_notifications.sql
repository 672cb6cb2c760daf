-- Realtime: tell listening processes about new device messages and key changes (ids only; the
-- rows stay the source of truth and the replay path the safety net).

CREATE OR REPLACE FUNCTION end_device() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM device_keys WHERE device_id = NEW.id) THEN
        DELETE FROM device_keys WHERE device_id = NEW.id;
        INSERT INTO key_changes (user_id, device_id, change, created_at)
        VALUES (NEW.user_id, NEW.id, 'device_removed', NEW.revoked_at);
        PERFORM pg_notify('veil_events', 'keys:' || NEW.user_id || ':' || NEW.id || ':device_removed');
    END IF;
    DELETE FROM device_messages WHERE recipient_device_id = NEW.id;
    DELETE FROM device_message_gaps WHERE recipient_device_id = NEW.id;
    RETURN NULL;
END;
$$;
