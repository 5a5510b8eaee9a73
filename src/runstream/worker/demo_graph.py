"""The built-in demo graph: `plan` then `answer`, streaming from an offline chat model.

`ScriptedChatModel` is a real langchain-core chat model that needs no network and no key:
it answers with `demo_answer(prompt)`, word by word, at a fixed token rate, so the demo
paces like a hosted model and its output is exactly known to the tests.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Annotated, Any, TypedDict

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, AnyMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph, add_messages
from langgraph.graph.state import CompiledStateGraph
from pydantic import Field

_HANGUL = re.compile(r"[\u1100-\u11ff\u3130-\u318f\uac00-\ud7a3]")
# A word with the whitespace before it, or trailing whitespace: the pieces always
# concatenate back to the exact text.
_WORD = re.compile(r"\s*\S+|\s+")

_ANSWER_KO = (
    "Redis 리스트와 Redis Streams는 둘 다 순서 있는 데이터를 담지만, 읽는 방식이 다릅니다. "
    "리스트는 RPUSH로 넣고 LPOP이나 BLMPOP으로 꺼내는 큐입니다. 꺼낸 항목은 리스트에서 "
    "사라지므로 한 항목은 한 소비자에게만 전달되고, 연결이 끊긴 클라이언트가 다시 읽거나 여러 "
    "클라이언트가 같은 내용을 받을 수는 없습니다. 처리 도중의 손실을 막으려면 LMOVE로 처리 중 "
    "리스트에 옮겨 두는 패턴을 직접 구현해야 합니다.\n\n"
    "Streams는 XADD로 추가한 항목마다 ID가 붙는 추가 전용 로그입니다. XREAD는 항목을 지우지 "
    "않으므로 여러 소비자가 각자 마지막으로 받은 ID부터 이어 읽을 수 있고, 재접속한 클라이언트도 "
    "빠진 부분 없이 다시 받습니다. 소비자 그룹(XREADGROUP)은 작업을 여러 워커에 나누고, XACK로 "
    "완료를 기록하며, XAUTOCLAIM으로 멈춘 워커의 작업을 넘겨받습니다. MAXLEN으로 길이를 제한해 "
    "메모리도 관리할 수 있습니다.\n\n"
    "정리하면, 한 번 읽고 버리는 단순한 작업 큐에는 리스트가 가볍고 빠르며, 재생과 팬아웃, "
    "재접속 후 이어 읽기가 필요한 이벤트 스트림에는 Streams가 알맞습니다. runstream은 두 "
    "백엔드를 모두 제공하므로 같은 작업으로 직접 비교해 볼 수 있습니다."
)

_ANSWER_EN = (
    "Redis lists and Redis Streams both keep ordered data, but they are read in different "
    "ways. A list is a queue: producers RPUSH, consumers LPOP or BLMPOP. Popping removes the "
    "item, so each item reaches exactly one consumer, and a client that disconnects cannot "
    "read it again, nor can several clients receive the same item. To survive a consumer "
    "crash you build the processing-list pattern yourself with LMOVE.\n\n"
    "A stream is an append-only log in which XADD gives every entry an ID. XREAD does not "
    "remove anything, so many consumers read the same entries, each resuming from the last "
    "ID it saw, and a reconnecting client picks up exactly where it stopped. Consumer groups "
    "(XREADGROUP) split work between workers, record completion with XACK and hand a stalled "
    "worker's entries to another with XAUTOCLAIM, while MAXLEN caps memory.\n\n"
    "In short: for a simple read-once work queue a list is lean and fast; for an event "
    "stream that needs replay, fan-out and resume after a reconnect, use Streams. runstream "
    "ships both backends, so you can compare them on the same job."
)


DEMO_PLAN = "compare how each structure is written, read and recovered; then advise"
"""What the demo's `plan` node decides (sent as a `custom` event and kept in the state)."""


def demo_answer(prompt: str) -> str:
    """The demo model's answer: Korean if the prompt has any Hangul, English otherwise."""
    return _ANSWER_KO if _HANGUL.search(prompt) else _ANSWER_EN


def split_words(text: str) -> list[str]:
    """`text` cut before each word, whitespace kept: `"".join(split_words(t)) == t`."""
    return _WORD.findall(text)


class ScriptedChatModel(BaseChatModel):
    """An offline chat model that answers `respond(last human message)` word by word.

    `token_rate` is the pace of the stream in chunks per second; the first chunk comes at
    once, the next ones `1 / token_rate` seconds apart.
    """

    token_rate: float = Field(50.0, gt=0)
    respond: Callable[[str], str] = demo_answer

    @property
    def _llm_type(self) -> str:
        return "runstream-scripted"

    def _answer(self, messages: Sequence[BaseMessage]) -> str:
        prompts = [m.text for m in messages if isinstance(m, HumanMessage)]
        return self.respond(prompts[-1] if prompts else "")

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        message = AIMessage(content=self._answer(messages))
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._generate(messages, stop, **kwargs)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for index, word in enumerate(split_words(self._answer(messages))):
            if index:
                await asyncio.sleep(1 / self.token_rate)
            yield ChatGenerationChunk(message=AIMessageChunk(content=word))


class DemoState(TypedDict, total=False):
    """The demo graph's state. Its input is `{"prompt": ...}`."""

    prompt: str
    plan: str
    messages: Annotated[list[AnyMessage], add_messages]


def build_demo_graph(token_rate: float) -> CompiledStateGraph[Any, Any, Any, Any]:
    """The compiled demo graph; its answer streams at `token_rate` chunks per second."""
    model = ScriptedChatModel(token_rate=token_rate)

    async def plan(state: DemoState) -> DemoState:
        prompt = state.get("prompt", "")
        language = "ko" if _HANGUL.search(prompt) else "en"
        get_stream_writer()({"step": "plan", "language": language, "plan": DEMO_PLAN})
        return {"plan": DEMO_PLAN}

    async def answer(state: DemoState) -> DemoState:
        reply = await model.ainvoke([HumanMessage(state.get("prompt", ""))])
        return {"messages": [reply]}

    builder = StateGraph(DemoState)
    builder.add_node("plan", plan)
    builder.add_node("answer", answer)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "answer")
    builder.add_edge("answer", END)
    return builder.compile(name="runstream-demo")
