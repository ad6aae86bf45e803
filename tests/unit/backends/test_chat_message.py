"""A chat turn reaches vLLM and chat templates with its reasoning and tool calls together."""

from backends.base import ChatMessage, ChatPrompt, ToolCall
from backends.vllm_requests import messages


def test_an_assistant_turn_carries_reasoning_and_calls_and_a_tool_turn_its_call_id() -> None:
    call = ToolCall("call_1", "weather", '{"city": "Paris"}')
    prompt = ChatPrompt(
        (
            ChatMessage("user", "Weather?"),
            ChatMessage("assistant", "", (call,), reasoning="I should look it up."),
            ChatMessage("tool", "sunny", tool_call_id="call_1"),
        )
    )
    assert messages(prompt) == [
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": "",
            "reasoning": "I should look it up.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
    ]
