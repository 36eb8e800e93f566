"""Concurrent ``POST /v1/score`` requests scored together: one model call for the records of many requests.

A call to the scoring core costs a fixed part in Python (the value model, reasons, actions, numpy's and
LightGBM's set-up) on top of each record's exact TreeSHAP. On the reference model (300 trees of 4 leaves)
one record alone costs about 1.6 ms of CPU, of which TreeSHAP is 0.05 ms; eight in one call cost about
0.35 ms each. So requests wait on the event loop (holding no thread) while the ``threads`` workers are
busy, and a worker that comes free takes what has gathered: its share of the waiting records (the rest is
left to the other free workers, so a model whose TreeSHAP dominates keeps both cores busy), every
request whole. Nothing waits on purpose: a request alone is scored at once, as before.

Each request's records are checked on their own, so one request's invalid values are its own 422. A
batch holds one model and one as-of date (no response mixes versions) and one ``group`` of requests.
Should scoring a batch fail, its requests are scored one by one, so a failure reaches only the request
that causes it."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from anyio import CapacityLimiter, to_thread

from serving.model_source import LoadedModel
from serving.schemas import ScoreRequest

Scored = list[dict[str, object]]


@dataclass(eq=False)
class ScoreJob:
    """One request's records, the model that scores them, the date they are scored at and its ``group``:
    requests batch only within one group, which the route chooses so that a batch looks to each record as
    its own request would (see :func:`serving.api.score.batch_group`)."""

    body: ScoreRequest
    model: LoadedModel
    as_of: str
    group: Hashable = None
    done: asyncio.Future[Scored] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.done = asyncio.get_running_loop().create_future()

    @property
    def size(self) -> int:
        return len(self.body.records)

    def batches_with(self, other: ScoreJob) -> bool:
        return other.model is self.model and other.as_of == self.as_of and other.group == self.group


# What a worker thread runs: the jobs of one batch -> each job's scores, or the exception it raised.
ScoreBatch = Callable[[list[ScoreJob]], list["Scored | BaseException"]]


class ScoreBatcher:
    """Hands waiting score requests to at most ``threads`` worker threads, batched (see the module).

    ``max_records``: a worker takes jobs up to this many records at once (one larger request goes alone)."""

    def __init__(self, score: ScoreBatch, threads: int, max_records: int = 64) -> None:
        self._score = score
        self._threads = threads
        self._max_records = max_records
        self._waiting: deque[ScoreJob] = deque()
        self._workers = 0  # runners alive: each holds at most one thread at a time
        self._busy = 0  # runners inside a worker thread
        self._runners: set[asyncio.Task[None]] = set()
        self._limiter: CapacityLimiter | None = None

    async def score(self, job: ScoreJob) -> Scored:
        """The job's scores, once a worker has scored it (its own exception if its records are refused)."""
        self._waiting.append(job)
        self._wake()
        return await job.done

    def _wake(self) -> None:
        """Start a runner if requests wait and a thread is free. The runner starts after the callbacks
        already ready in this turn of the event loop, so the requests that arrived together batch."""
        if self._waiting and self._workers < self._threads:
            self._workers += 1
            runner = asyncio.get_running_loop().create_task(self._run())
            self._runners.add(runner)
            runner.add_done_callback(self._runners.discard)

    def _take(self) -> list[ScoreJob]:
        """This runner's share of the waiting jobs: whole requests for one model and date, about the
        waiting records divided among the free threads, at most ``max_records`` (one request at least)."""
        while self._waiting and self._waiting[0].done.done():  # the client went away: nothing to score
            self._waiting.popleft()
        if not self._waiting:
            return []
        free = max(1, self._threads - self._busy)
        waiting = sum(job.size for job in self._waiting)
        share = min(self._max_records, math.ceil(waiting / free))
        first = self._waiting.popleft()
        jobs, records, kept = [first], first.size, deque[ScoreJob]()
        while self._waiting and records < share:
            job = self._waiting.popleft()
            if job.done.done():
                continue
            if job.batches_with(first) and records + job.size <= share:
                jobs.append(job)
                records += job.size
            else:
                kept.append(job)
        self._waiting.extendleft(reversed(kept))
        return jobs

    async def _run(self) -> None:
        try:
            while jobs := self._take():
                self._wake()  # more waiting than this share: another free thread takes the rest
                self._busy += 1
                try:
                    results = await to_thread.run_sync(self._score_isolated, jobs, limiter=self._limit())
                except BaseException:  # cancelled (the server stopping): no request waits for ever
                    for job in jobs:
                        job.done.cancel()
                    raise
                finally:
                    self._busy -= 1
                for job, result in zip(jobs, results, strict=True):
                    if job.done.done():
                        continue
                    if isinstance(result, BaseException):
                        job.done.set_exception(result)
                    else:
                        job.done.set_result(result)
                # Let the loop answer these and read what arrived meanwhile before taking the next share
                # (measured: fewer, larger batches and about 10% less CPU per request at c=8 and 32).
                await asyncio.sleep(0)
        finally:
            self._workers -= 1
            self._wake()  # a runner that stopped early leaves the waiting requests to another

    def _score_isolated(self, jobs: list[ScoreJob]) -> list[Scored | BaseException]:
        """Each job's scores; if scoring the batch fails as a whole, each job is scored alone, so an
        exception reaches only the request that raised it."""
        try:
            return self._score(jobs)
        except Exception as exc:
            if len(jobs) == 1:
                return [exc]
        results: list[Scored | BaseException] = []
        for job in jobs:
            try:
                results += self._score([job])
            except Exception as exc:
                results.append(exc)
        return results

    def _limit(self) -> CapacityLimiter:
        if self._limiter is None:  # created in the event loop that uses it
            self._limiter = CapacityLimiter(self._threads)
        return self._limiter


def job_spans(jobs: list[ScoreJob]) -> list[tuple[int, int]]:
    """Each job's [start, end) among the batch's records, in order."""
    spans, start = [], 0
    for job in jobs:
        spans.append((start, start + job.size))
        start += job.size
    return spans
