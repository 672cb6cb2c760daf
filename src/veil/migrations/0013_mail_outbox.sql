-- Outgoing mail waits here until a worker has handed it to the SMTP server (veil.core.outbox,
-- docs/adr/0014-mail-outbox.md). A row is written in the transaction of the change that causes the
-- mail, so a rolled-back change sends nothing and a committed one is never lost; a NOTIFY on
-- 'veil_mail_outbox' (delivered at commit) wakes the workers. Bodies hold one-time codes: a row is
-- deleted as soon as its mail is sent, or after its last failed attempt.

CREATE TABLE mail_outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    recipient        text NOT NULL,
    subject          text NOT NULL,
    body             text NOT NULL,
    created_at       timestamptz NOT NULL,
    -- Attempts started so far; a claimed row is leased by moving next_attempt_at into the future,
    -- so a worker that dies mid-send leaves the row to another once the lease is over.
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL,
    -- The kind of the last failure (an exception class name), never the server's reply text,
    -- which can quote the address.
    last_error       text CHECK (length(last_error) <= 64)
);
CREATE INDEX mail_outbox_due ON mail_outbox (next_attempt_at);
CREATE INDEX mail_outbox_by_recipient ON mail_outbox (lower(recipient));
