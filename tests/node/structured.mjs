// Structured output through the gateway from the Vercel AI SDK: generateObject with a zod
// schema, which the SDK sends as response_format json_schema (a provider that supports
// structured outputs) and validates the answer against, voted on by a strategy named in the
// provider's options. Usage: node structured.mjs <base URL ending in /v1> <model>; prints one
// JSON object.
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { generateObject } from "ai";
import { z } from "zod";

const [baseURL, model] = process.argv.slice(2);

const Winner = z.object({
  team: z.string(),
  year: z.number().int(),
  margin: z.number(),
  scorers: z.array(z.string()),
  venue: z.enum(["home", "away", "neutral"]),
});

const provider = createOpenAICompatible({
  name: "ttc",
  baseURL,
  apiKey: "x",
  supportsStructuredOutputs: true,
});
const result = await generateObject({
  model: provider.chatModel(model),
  schema: Winner,
  schemaName: "winner",
  prompt: "Who won the 1998 final?",
  // Options under the provider's name that the SDK does not know go into the request body.
  providerOptions: { ttc: { reasoning_strategy: "majority_vote", reasoning_params: { n: 3 } } },
  maxRetries: 0,
});

console.log(
  JSON.stringify({
    object: result.object,
    // generateObject has already validated the object; check it again independently.
    valid: Winner.safeParse(result.object).success,
    finish: result.finishReason,
    output_tokens: result.usage.outputTokens,
  }),
);
