"""Jobs: runs of workflows kept in a SQLite store and executed by a queue on one Session."""

from .outputs import OutputRecorder, summarize
from .queue import Deleted, JobBusy, JobQueue, JobRejected, apply_overrides, opens
from .store import FINAL, SCHEMA_VERSION, STATUSES, Job, JobStatus, JobStore, OutputFile, StoreError

__all__ = ["FINAL", "SCHEMA_VERSION", "STATUSES", "Deleted", "Job", "JobBusy", "JobQueue", "JobRejected",
           "JobStatus", "JobStore", "OutputFile", "OutputRecorder", "StoreError", "apply_overrides", "opens",
           "summarize"]
