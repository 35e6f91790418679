-- LeaseEnded says whether Scheduling's record shows the lease never started. Kept so that a hold placed only after its
-- LeaseEnded arrived (the events travel on different queues) is released at once too.
ALTER TABLE usage ADD COLUMN never_ran boolean NOT NULL DEFAULT false;
