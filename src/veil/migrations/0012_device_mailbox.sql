-- Device mailboxes shared fairly between senders (issue 13, item 2). A sender may hold only a
-- bounded number of unacknowledged envelopes in one device's queue, checked on every send: this
-- index answers "how many of this sender's envelopes does this device still hold?" without
-- reading the rest of the queue.
CREATE INDEX device_messages_by_sender ON device_messages (recipient_device_id, sender_user_id);
