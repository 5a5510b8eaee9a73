"""A graph for the fault tests: one node streaming `TOKENS` numbered words, fast."""

from __future__ import annotations

import os
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.graph import END, START, MessagesState, StateGraph

from runstream.worker.demo_graph import ScriptedChatModel

TOKENS = 5000


def long_answer(prompt: str = "") -> str:
    return "".join(f" w{i}" for i in range(TOKENS))


def _build() -> Any:
    rate = float(os.environ.get("RUNSTREAM_DEMO_TOKEN_RATE", "2000"))
    model = ScriptedChatModel(token_rate=rate, respond=long_answer)

    async def answer(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke([HumanMessage("go")])]}

    builder = StateGraph(MessagesState)
    builder.add_node("answer", answer)
    builder.add_edge(START, "answer")
    builder.add_edge("answer", END)
    return builder.compile()


graph = _build()
