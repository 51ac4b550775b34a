"""The jobs API: submit, follow (Server-Sent Events), read, cancel, requeue and delete jobs.

Served by `nodegraph serve` and `nodegraph ui` behind the same guard as every route. Bodies are the
pydantic models of `ui.job_models`, so /openapi.json and /docs describe them. A job's key comes
back only from its submit; reading, following, cancelling, requeuing or deleting a job needs that
key (`X-Job-Key` header or `key=` query parameter) or the server's token. The history list shows
every job's status and timings, not its workflow or outputs.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from nodegraph import Workflow, WorkflowFormatError
from nodegraph.jobs import FINAL, Job, JobBusy, JobQueue, JobRejected, JobStatus, opens
from nodegraph.jobs.outputs import inside

from .guard import holds_token
from .job_models import (
    MAX_PAGE,
    Cancelled,
    DeleteAnswer,
    JobCreated,
    JobDetail,
    JobEvent,
    JobPage,
    JobRequest,
    JobSummary,
    Message,
    ProblemModel,
    Rejected,
    RejectedDetail,
)

KEEPALIVE_SECONDS = 15.0
"""A comment line goes down an idle event stream this often, so proxies and clients see it alive."""

JobId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="the job's id")]


def rejected(message: str, problems: list[ProblemModel]) -> HTTPException:
    return HTTPException(422, RejectedDetail(message=message, problems=problems).model_dump())


class JobsRoute(APIRoute):
    """Request validation errors answered in the `Rejected` shape, like an invalid workflow."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as err:
                problems = [ProblemModel(kind="bad_request", message=f"{'.'.join(map(str, e['loc']))}: {e['msg']}")
                            for e in err.errors()]
                raise rejected("not a valid request", problems) from None

        return handle


class EventStream(StreamingResponse):
    media_type = "text/event-stream"


def job_key(request: Request) -> str | None:
    """The job's secret, from the `X-Job-Key` header or the `key` query parameter."""
    return request.headers.get("x-job-key") or request.query_params.get("key")


def sse(seq: int, data: dict[str, Any]) -> str:
    return f"id: {seq}\ndata: {json.dumps(data)}\n\n"


def build_jobs_router(jobs: JobQueue) -> APIRouter:
    router = APIRouter(prefix="/api/jobs", tags=["jobs"], route_class=JobsRoute,
                       responses={422: {"model": Rejected}, 403: {"model": Message}, 404: {"model": Message}})

    def owned(job_id: int, request: Request) -> Job:
        job = jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id}")
        if not (holds_token(request.scope) or opens(job, job_key(request))):
            raise HTTPException(403, f"job {job_id} belongs to another client (send its key as X-Job-Key)")
        return job

    @router.post("", status_code=201, response_model=JobCreated, summary="Queue a workflow")
    def submit(body: JobRequest) -> JobCreated:
        """Validate the workflow with the overrides applied (every problem comes back at once, by node
        and input, and nothing is queued), then queue it. The answer's key opens the job."""
        try:
            workflow = Workflow.from_dict(body.workflow)
        except WorkflowFormatError as err:
            raise rejected("not a workflow file", [ProblemModel(kind="format", message=p) for p in err.problems]) \
                from None
        try:
            job, key = jobs.submit(workflow, body.overrides, priority=body.priority)
        except JobRejected as err:
            problems = [ProblemModel(**p.as_dict()) for p in err.problems]
            count = len(problems)
            raise rejected(f"workflow is invalid ({count} problem{'s' * (count != 1)})", problems) from None
        return JobCreated(id=job.id, key=key, status=job.status)

    @router.get("", response_model=JobPage, summary="History, newest first")
    def history(status: Annotated[list[JobStatus] | None, Query(description="only these (repeatable)")] = None,
                limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
                before: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="ids below this")] = None,
                ) -> JobPage:
        found, total = jobs.history(status or (), limit=limit + 1, before=before)  # one more: is there a next page?
        page = found[:limit]
        return JobPage(jobs=[JobSummary.of(j) for j in page], total=total,
                       next_before=page[-1].id if len(found) > limit else None)

    @router.get("/{job_id}", response_model=JobDetail, summary="One job, with its workflow and outputs")
    def detail(job_id: JobId, request: Request) -> JobDetail:
        return JobDetail.of(owned(job_id, request))

    @router.get("/{job_id}/events", response_class=EventStream, summary="Follow a job's events (SSE)",
                responses={200: {"model": JobEvent, "description": "text/event-stream: `id: <seq>` and `data: "
                                 "<JobEvent JSON>` per event; ends after the `finished` event"}})
    async def events(job_id: JobId, request: Request,
                     since: Annotated[int, Query(ge=0, le=2**62, description="first event to send")] = 0,
                     ) -> EventStream:
        """Every stored event from `since` on, then new ones as they happen (a reconnecting EventSource's
        Last-Event-ID header wins over `since`)."""
        await run_in_threadpool(owned, job_id, request)
        last = request.headers.get("last-event-id", "")
        start = int(last) + 1 if last.isdigit() and len(last) < 18 else since
        return EventStream(follow(jobs, job_id, start), headers={"Cache-Control": "no-store",
                                                                   "X-Accel-Buffering": "no"})

    @router.get("/{job_id}/outputs/{node:path}/{index}", response_class=FileResponse, summary="An output file",
                responses={200: {"content": {"image/png": {}, "application/octet-stream": {}}}})
    def output_file(job_id: JobId, node: str, index: Annotated[int, PathParam(ge=0, le=2**31)],
                    request: Request) -> FileResponse:
        job = owned(job_id, request)
        found = [f for f in job.files if f.node == node and f.index == index]
        folder = jobs.previews_dir if found and found[0].kind == "preview" else jobs.session.output_dir
        if not found or not inside(Path(found[0].path), folder):
            raise HTTPException(404, f"no file {index} of node {node!r} in job {job_id}")
        return FileResponse(Path(found[0].path).resolve(), media_type=found[0].media_type,
                            headers={"Cache-Control": "no-store"})

    @router.get("/{job_id}/preview.png", response_class=Response, summary="The running job's latest preview",
                responses={200: {"content": {"image/png": {}}}})
    def preview(job_id: JobId, request: Request) -> Response:
        owned(job_id, request)
        png = jobs.preview(job_id)
        if png is None:
            raise HTTPException(404, f"no preview for job {job_id}")
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @router.post("/{job_id}/cancel", response_model=Cancelled, summary="Cancel a queued or running job")
    def cancel(job_id: JobId, request: Request) -> Cancelled:
        owned(job_id, request)
        return Cancelled(cancelled=jobs.cancel(job_id))

    @router.post("/{job_id}/requeue", response_model=JobSummary, summary="Queue a stopped job again",
                 responses={409: {"model": Message}})
    def requeue(job_id: JobId, request: Request) -> JobSummary:
        """A failed, cancelled or interrupted job goes back in the queue with the same id and key; its
        previous attempt's events and preview images are dropped."""
        job = owned(job_id, request)
        again = jobs.requeue(job_id)
        if again is None:
            raise HTTPException(409, f"job {job_id} is {job.status}; only failed, cancelled or interrupted jobs "
                                     "can be requeued")
        return JobSummary.of(again)

    @router.delete("/{job_id}", response_model=DeleteAnswer, summary="Delete a job from the history",
                   responses={409: {"model": Message}})
    def delete(job_id: JobId, request: Request,
               delete_files: Annotated[bool, Query(description="also delete the files its nodes saved (only "
                                                               "those inside the output folder)")] = False,
               ) -> DeleteAnswer:
        owned(job_id, request)
        try:
            gone = jobs.delete(job_id, delete_files)
        except JobBusy as err:
            raise HTTPException(409, str(err)) from None
        if gone is None:
            raise HTTPException(404, f"no job {job_id}")
        return DeleteAnswer(id=job_id, files_deleted=gone.files_deleted, files_kept=gone.files_kept)

    return router


async def follow(jobs: JobQueue, job_id: int, since: int) -> AsyncIterator[str]:
    """The SSE body: stored events from `since`, then each new one, until `finished` (or the job is
    deleted). Waiting holds no thread: it awaits the queue's change counter."""
    position = since
    while True:
        seen = jobs.changes.version
        batch = await run_in_threadpool(jobs.events, job_id, position)
        for seq, data in batch:
            yield sse(seq, data)
            position = seq + 1
            if data.get("kind") == "finished":
                return
        if batch:
            continue
        status = await run_in_threadpool(jobs.store.status, job_id)
        if status is None:
            return  # deleted while followed
        if status in FINAL:  # `since` past its last event, or the end arrived since the read above
            if await run_in_threadpool(jobs.events, job_id, position, 1):
                continue
            return
        if not await jobs.changes.wait_async(seen, KEEPALIVE_SECONDS):
            yield ": keep-alive\n\n"


