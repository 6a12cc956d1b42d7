-- What each commit asked for, so a reused commit id with another request is refused rather
-- than answered with the first request's outcome. Keep in step with
-- ../postgres/0007_request_digest.sql.
ALTER TABLE commits ADD COLUMN request_digest TEXT;
