-- Why a node is unhealthy and why it is unverified are kept apart: a silent node's "no heartbeat since ..." no longer
-- overwrites the inventory differences that made it unverified (the verified flag was kept, its reason was not).
ALTER TABLE nodes
    ADD COLUMN health_reason       text,
    ADD COLUMN verification_reason text;

-- The one status_reason held the latest of both; split it by the wording the service wrote.
UPDATE nodes SET
    verification_reason = CASE WHEN NOT verified AND last_heartbeat_at IS NOT NULL THEN coalesce(
        substring(status_reason FROM 'observed inventory differs from the declared one: .*$'),
        'observed inventory differs from the declared one (the differences were overwritten before reasons were kept apart)') END,
    health_reason = CASE WHEN health = 'unhealthy' THEN
        nullif(regexp_replace(coalesce(status_reason, ''), '(\. )?observed inventory differs from the declared one: .*$', ''), '') END;

ALTER TABLE nodes DROP COLUMN status_reason;
