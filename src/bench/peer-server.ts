// The peer baseline: what a team would otherwise build, a plain HTTP JSON endpoint (fastify) that
// validates the contract's RuntimeRequest JSON Schema with ajv and answers. Prints "listening <port>".
import { readFileSync } from "node:fs";
import { Ajv2020 } from "ajv/dist/2020.js";
import addFormats from "ajv-formats";
import Fastify from "fastify";

const schema = JSON.parse(
  readFileSync(new URL("../../test/fixtures/seed/runtime-request.schema.json", import.meta.url), "utf8"),
);
const ajv = new Ajv2020({ allErrors: true });
addFormats.default(ajv);
const validate = ajv.compile(schema);

const app = Fastify({ logger: false });
app.post("/admit", async (request, reply) => {
  if (!validate(request.body)) {
    return reply.code(400).send({ accepted: false, errors: validate.errors });
  }
  const body = request.body as { requestId: string };
  return { accepted: true, requestId: body.requestId };
});
const address = await app.listen({ host: "127.0.0.1", port: 0 });
process.stdout.write(`listening ${new URL(address).port}\n`);
