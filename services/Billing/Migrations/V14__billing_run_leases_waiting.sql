-- How many leases of the period a run left for a later one because some of their events (the start, an interruption,
-- a resume) had not reached Billing yet (BillingRunner.Ran, DowntimeArrived). Finance sees it in the run's answer and
-- progress: a period is not fully billed while it is above zero.
ALTER TABLE billing_runs ADD COLUMN leases_waiting int NOT NULL DEFAULT 0;
