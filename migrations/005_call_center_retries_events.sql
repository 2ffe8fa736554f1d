-- The events behind a parked uid, as they were on their topic (key, value and headers in base64, with their topic,
-- partition and offset). Their offsets are committed once the uid is parked: if the call center then refuses the
-- uid for good, the retry loop dead-letters these events, as the stream would have, before it forgets the uid.
ALTER TABLE call_center_retries ADD COLUMN IF NOT EXISTS events jsonb NOT NULL DEFAULT '[]'::jsonb;
