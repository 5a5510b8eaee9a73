"""A graph for the e2e tests whose second node raises, after the first one streamed."""

from __future__ import annotations

from typing import Any, TypedDict

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph

MESSAGE = "the test graph failed on purpose"


class State(TypedDict, total=False):
    prompt: str
    step: str


async def first(state: State) -> State:
    get_stream_writer()({"step": "first"})
    return {"step": "first"}


async def fail(state: State) -> State:
    raise ValueError(MESSAGE)


def _build() -> Any:
    builder = StateGraph(State)
    builder.add_node("first", first)
    builder.add_node("fail", fail)
    builder.add_edge(START, "first")
    builder.add_edge("first", "fail")
    builder.add_edge("fail", END)
    return builder.compile()


graph = _build()
