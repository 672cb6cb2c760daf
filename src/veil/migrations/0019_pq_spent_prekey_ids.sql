-- The ids of one-time PQ prekeys already handed out. The key rows are deleted when claimed (1,184
-- bytes are not worth keeping), so without this a device (or a retried request) that uploaded a
-- handed-out key again would have it handed out a second time. Key ids are never reused by a
-- device, so these rows only go with the device.
CREATE TABLE pq_spent_prekey_ids (
    device_id  uuid NOT NULL REFERENCES device_keys (device_id) ON DELETE CASCADE,
    key_id     bigint NOT NULL CHECK (key_id BETWEEN 0 AND 4294967295),
    PRIMARY KEY (device_id, key_id)
);
