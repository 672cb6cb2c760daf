-- Exports are built by a background job: a confirmed export request queues a row here in state
-- 'building'; a worker in any account process claims it, writes the archive to the object store
-- and marks it 'ready' (the download URL is presigned when asked for, until expires_at).

ALTER TABLE export_archives
    ADD COLUMN request_id  uuid,
    ADD COLUMN state       text NOT NULL DEFAULT 'ready' CHECK (state IN ('building', 'ready')),
    ADD COLUMN ready_at    timestamptz;
UPDATE export_archives SET ready_at = created_at;
ALTER TABLE export_archives
    ALTER COLUMN state DROP DEFAULT,
    ADD CONSTRAINT export_archives_ready_at CHECK ((state = 'ready') = (ready_at IS NOT NULL));
CREATE INDEX export_archives_building ON export_archives (created_at) WHERE state = 'building';
CREATE UNIQUE INDEX export_archives_by_request ON export_archives (request_id);
