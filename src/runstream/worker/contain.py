"""Keep a graph's `KeyboardInterrupt` or `SystemExit` inside its job.

asyncio re-raises these two out of the event loop from whichever task raised them, so a
node that calls `sys.exit()` would stop the whole worker. LangGraph runs each node in a
task of its own, out of reach of the runner's `try`. While a job's graph runs,
`graph_scope()` marks its context, and `contain_graph_exits()` installs a task factory
that wraps each task created in such a context: an exit raised there becomes
`GraphExited`, an ordinary exception that LangGraph passes on to the runner, which ends
the job with `error` then `done`. Tasks created outside a graph (the worker's own, the
signal handlers') are not wrapped, and the worker takes SIGINT and SIGTERM through
`loop.add_signal_handler`, so a real Ctrl-C never arrives as a `KeyboardInterrupt` in a
graph: it still stops the worker.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine, Generator, Iterator
from contextlib import contextmanager
from typing import Any

_IN_GRAPH: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "runstream_in_graph", default=False
)


class GraphExited(Exception):
    """A graph raised `KeyboardInterrupt` or `SystemExit`; `original` is that exception."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(str(original))
        self.original = original


@contextmanager
def graph_scope() -> Iterator[None]:
    """Mark the current context (and the tasks created from it) as running a graph."""
    token = _IN_GRAPH.set(True)
    try:
        yield
    finally:
        _IN_GRAPH.reset(token)


def contain_graph_exits(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Install the task factory on `loop` (the running loop by default); idempotent."""
    loop = loop or asyncio.get_running_loop()
    previous = loop.get_task_factory()
    if getattr(previous, "contains_graph_exits", False):
        return

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Future[Any]:
        context = kwargs.get("context") or contextvars.copy_context()
        if context.get(_IN_GRAPH, False):
            coro = _Contained(coro)
        if previous is not None:
            return previous(loop, coro, **kwargs)
        return asyncio.Task(coro, loop=loop, **kwargs)

    factory.contains_graph_exits = True  # type: ignore[attr-defined]
    loop.set_task_factory(factory)


class _Contained(Coroutine[Any, Any, Any]):
    """Delegates to `coro`, turning an exit it raises into `GraphExited`.

    A coroutine object, not an `async def` wrapper: a task cancelled before its first step
    throws into `coro` directly, so `coro` never warns that it was not awaited.
    """

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._coro = coro

    def send(self, value: Any) -> Any:
        try:
            return self._coro.send(value)
        except (KeyboardInterrupt, SystemExit) as exc:
            raise GraphExited(exc) from exc

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        try:
            if val is None and tb is None:
                return self._coro.throw(typ)
            return self._coro.throw(typ, val, tb)
        except (KeyboardInterrupt, SystemExit) as exc:
            raise GraphExited(exc) from exc

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, None, Any]:
        return self

    def __iter__(self) -> _Contained:
        return self

    def __next__(self) -> Any:
        return self.send(None)
