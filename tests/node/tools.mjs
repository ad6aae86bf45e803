// Tool calls through the gateway from the Node clients: the openai SDK (a call, and a call
// streamed) and the Vercel AI SDK's generateText (a call, its tool run, and the answer to its
// result). Usage: node tools.mjs <base URL ending in /v1> <model>; prints one JSON object.
import OpenAI from "openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { generateText, jsonSchema, stepCountIs, tool } from "ai";

const [baseURL, model] = process.argv.slice(2);
const weather = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string" }, days: { type: "integer" } },
      required: ["city"],
    },
  },
};

const client = new OpenAI({ baseURL, apiKey: "x", maxRetries: 0 });
const asked = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content: "CALL: the weather in Paris?" }],
  tools: [weather],
});
const call = asked.choices[0].message.tool_calls[0];

const stream = await client.chat.completions.create({
  model,
  messages: [{ role: "user", content: "The weather in Paris?" }],
  tools: [weather],
  tool_choice: "required",
  stream: true,
});
const pieces = [];
let streamedFinish = null;
for await (const chunk of stream) {
  for (const choice of chunk.choices) {
    pieces.push(...(choice.delta.tool_calls ?? []));
    streamedFinish = choice.finish_reason ?? streamedFinish;
  }
}

const provider = createOpenAICompatible({ name: "ttc", baseURL, apiKey: "x" });
const ran = [];
const result = await generateText({
  model: provider.chatModel(model),
  prompt: "CALL: the weather in Paris?",
  tools: {
    get_weather: tool({
      description: weather.function.description,
      inputSchema: jsonSchema(weather.function.parameters),
      execute: async (input) => {
        ran.push(input);
        return "18 C and sunny";
      },
    }),
  },
  stopWhen: stepCountIs(2),
  maxRetries: 0,
});

console.log(
  JSON.stringify({
    openai: {
      finish_reason: asked.choices[0].finish_reason,
      id: call.id,
      name: call.function.name,
      arguments: JSON.parse(call.function.arguments),
    },
    openai_stream: {
      finish_reason: streamedFinish,
      name: pieces[0]?.function?.name ?? null,
      arguments: JSON.parse(pieces.map((p) => p.function?.arguments ?? "").join("")),
    },
    ai_sdk: {
      steps: result.steps.length,
      first_finish: result.steps[0].finishReason,
      calls: result.steps[0].toolCalls.map((c) => ({ name: c.toolName, input: c.input })),
      ran,
      text: result.text,
    },
  }),
);
