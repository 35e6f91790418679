-- LeaseEnded says how many interruptions and resumes Scheduling recorded for the lease (null from older publishers).
-- LeaseInterrupted and LeaseResumed travel on other queues and may still be on their way when the lease's end arrives:
-- a billing run closes a lease only once Billing holds as many of each (BillingRunner.Ran), so late downtime is billed.
ALTER TABLE usage ADD COLUMN interruptions int, ADD COLUMN resumes int;
