"""`POST /v1/responses`: the request, the `response` object and its output items, stream events.

The subset of OpenAI's Responses API that vLLM serves for a text model: `input` as a string or
items (messages, reasoning, function calls and their outputs), `instructions`,
`max_output_tokens`, sampling, function `tools`, `reasoning` and `function_call` output items and
typed stream events. The server keeps nothing, so what needs a stored response (`store: true`,
`previous_response_id`, `conversation`, `background`) is a 400, as are hosted tools,
`text.format` and logprobs.

`request` holds the request and its translation for the strategies, `response` the `response`
object and its output items, `events` the stream events.
"""

__all__: list[str] = []
