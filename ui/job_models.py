"""Request and response bodies of the jobs API, as pydantic models (they are its OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from nodegraph.jobs import Job, JobStatus, OutputFile
from nodegraph.jobs.queue import PRIORITY_RANGE

MAX_PAGE = 500


class JobRequest(BaseModel):
    """A job to queue: a workflow exactly as in a workflow file, and overrides applied to it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "workflow": {"format": "nodegraph/workflow", "version": 1, "nodes": {
            "seed": {"type": "core/seed", "inputs": {"seed": 1}}}},
        "overrides": {"seed.seed": 7}, "priority": 0}]})
    workflow: dict[str, Any] = Field(description="the workflow file's JSON object")
    overrides: dict[str, Any] = Field(default_factory=dict,
                                      description='{"node.input": value}: set before validation, like --set')
    priority: int = Field(0, ge=PRIORITY_RANGE[0], le=PRIORITY_RANGE[1],
                          description="higher runs first; equal priorities run in submission order")


class JobCreated(BaseModel):
    id: int
    key: str = Field(description="the job's secret: send it as X-Job-Key (or ?key=) to follow, read or cancel it")
    status: JobStatus


class ProblemModel(BaseModel):
    kind: str = Field(description="unknown_type, bad_value, type_mismatch, missing_input, bad_override, ...")
    message: str
    node: str | None = None
    input: str | None = None


class RejectedDetail(BaseModel):
    message: str
    problems: list[ProblemModel]


class Rejected(BaseModel):
    """422: the workflow (or the request) is invalid; nothing was queued."""

    detail: RejectedDetail


class Message(BaseModel):
    """Any other error (403 not your job, 404 no such job, 409 wrong state)."""

    detail: str


class JobSummary(BaseModel):
    id: int
    name: str
    status: JobStatus
    priority: int
    queued_at: float = Field(description="Unix time, seconds")
    started_at: float | None = None
    finished_at: float | None = None
    seconds: float | None = Field(None, description="finished_at - started_at")
    error: str = ""
    error_node: str | None = None
    worker: str = Field("", description='who ran it: "local" or a Ray worker\'s name (empty until it ran)')

    @classmethod
    def of(cls, job: Job) -> JobSummary:
        return cls(id=job.id, name=job.name, status=job.status, priority=job.priority, queued_at=job.queued_at,
                   started_at=job.started_at, finished_at=job.finished_at, seconds=job.seconds, error=job.error,
                   error_node=job.error_node, worker=job.worker)


class FileModel(BaseModel):
    node: str
    index: int
    kind: Literal["preview", "saved"] = Field(description="preview: rendered by the server for this job (deleted "
                                                          "with it); saved: written by a node into the output folder")
    name: str
    media_type: str
    url: str = Field(description="GET it with the job's key")


class JobDetail(JobSummary):
    workflow: dict[str, Any] = Field(description="the workflow as it ran (overrides applied): open it in the editor")
    overrides: dict[str, Any]
    outputs: dict[str, dict[str, Any]] = Field(description="summaries of the output values by node and output "
                                                           "(tensors by shape, dtype, min and max)")
    ran: list[str]
    cached: list[str]
    files: list[FileModel]

    @classmethod
    def of(cls, job: Job) -> JobDetail:  # type: ignore[override]
        result = job.result
        return cls(**JobSummary.of(job).model_dump(), workflow=job.workflow, overrides=job.overrides,
                   outputs=result.get("outputs", {}), ran=result.get("ran", []), cached=result.get("cached", []),
                   files=[file_model(job.id, f) for f in job.files])


def file_model(job_id: int, item: OutputFile) -> FileModel:
    name = item.path.replace("\\", "/").rsplit("/", 1)[-1]
    return FileModel(node=item.node, index=item.index, kind=item.kind, name=name, media_type=item.media_type,
                     url=f"/api/jobs/{job_id}/outputs/{quote(item.node, safe='')}/{item.index}")


class JobPage(BaseModel):
    jobs: list[JobSummary] = Field(description="newest first")
    total: int = Field(description="jobs matching the filter, on all pages")
    next_before: int | None = Field(None, description="pass as ?before= for the next page; null on the last one")


class Cancelled(BaseModel):
    cancelled: bool = Field(description="false when the job was neither queued nor running")


class DeleteAnswer(BaseModel):
    id: int
    files_deleted: list[str]
    files_kept: list[str] = Field(description="files its nodes saved, left in place (delete_files=false, or "
                                              "outside the output folder)")


class JobEvent(BaseModel):
    """One Server-Sent Event's data. Kinds: run_start, node_skipped (muted or bypassed; message says
    why), node_start, node_cached, node_done, progress
    (step/total, info, preview=true when GET .../preview.png has a new image), warning, node_error,
    run_done, then finished (status = the job's final status) as the last event of the stream."""

    model_config = ConfigDict(extra="allow")
    kind: str
    node: str | None = None
    type: str | None = None
    seconds: float | None = None
    step: int | None = None
    total: int | None = None
    message: str | None = None
    status: str | None = None
    info: dict[str, Any] | None = None
    preview: bool | None = None
