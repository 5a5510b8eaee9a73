"""The demo graph: a real LangGraph graph streaming the scripted model's exact answer."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage

from runstream.worker.demo_graph import (
    ScriptedChatModel,
    build_demo_graph,
    demo_answer,
    split_words,
)

KOREAN_PROMPT = "Redis Streams와 리스트의 차이를 알려줘"
FAST = 10_000.0


@given(st.text())
def test_split_words_concatenates_to_the_exact_text(text: str) -> None:
    assert "".join(split_words(text)) == text


def test_split_words_keeps_whitespace_before_each_word() -> None:
    assert split_words("  a bc\n\nd  ") == ["  a", " bc", "\n\nd", "  "]


def test_demo_answer_language_follows_the_prompt() -> None:
    korean = demo_answer(KOREAN_PROMPT)
    english = demo_answer("What is the difference between Redis Streams and lists?")

    assert korean.startswith("Redis 리스트와 Redis Streams는")
    assert english.startswith("Redis lists and Redis Streams both keep ordered data")
    assert demo_answer("") == english
    assert 100 <= len(split_words(korean)) <= 200
    assert 100 <= len(split_words(english)) <= 200


async def test_scripted_model_streams_word_chunks_and_invokes_whole() -> None:
    model = ScriptedChatModel(token_rate=FAST)
    messages = [HumanMessage("hello")]

    chunks = [chunk async for chunk in model.astream(messages)]
    whole = await model.ainvoke(messages)

    texts = [chunk.text for chunk in chunks if chunk.text]
    assert texts == split_words(demo_answer("hello"))
    assert all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
    assert isinstance(whole, AIMessage)
    assert whole.text == demo_answer("hello")


async def test_demo_graph_streams_plan_then_the_exact_answer() -> None:
    graph = build_demo_graph(FAST)
    items = [
        item
        async for item in graph.astream(
            {"prompt": KOREAN_PROMPT}, stream_mode=["messages", "updates", "custom"]
        )
    ]

    modes = [mode for mode, _ in items]
    tokens = [data[0].text for mode, data in items if mode == "messages" and data[0].text]
    nodes = {data[1]["langgraph_node"] for mode, data in items if mode == "messages"}
    assert modes[0] == "custom"
    assert items[0][1]["step"] == "plan"
    assert items[0][1]["language"] == "ko"
    assert modes[1] == "updates"
    assert list(items[1][1]) == ["plan"]
    assert "".join(tokens) == demo_answer(KOREAN_PROMPT)
    assert tokens == split_words(demo_answer(KOREAN_PROMPT))
    assert nodes == {"answer"}
    assert modes[-1] == "updates"
    assert list(items[-1][1]) == ["answer"]
