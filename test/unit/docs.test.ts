// The documents users read must say what the code does: decision records are valid DecisionRecord
// messages, and the README's error table is the table the service applies and publishes.
import { readdirSync, readFileSync } from "node:fs";
import { fromJson, type JsonObject } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { errorCategories } from "../../src/core/errors.js";
import { DecisionRecordSchema } from "../../src/gen/envelope/v1/decision_record_pb.js";

const root = new URL("../../", import.meta.url);
const decisionsDir = new URL("docs/decisions/", root);
const records = readdirSync(decisionsDir).filter((f) => f.endsWith(".json"));

describe("decision records", () => {
  it("exist", () => {
    expect(records.length).toBeGreaterThan(0);
  });

  it.each(records)("%s is a complete DecisionRecord", (file) => {
    const json = JSON.parse(readFileSync(new URL(file, decisionsDir), "utf8")) as JsonObject;
    // fromJson rejects unknown fields, so a misspelled key fails here.
    const record = fromJson(DecisionRecordSchema, json);
    expect(file.startsWith(record.decisionId)).toBe(true);
    for (const key of ["title", "status", "scope", "decision", "rollback"] as const) expect(record[key]).not.toBe("");
    for (const key of ["requirements", "candidates", "evidence", "tradeoffs", "reviewTriggers"] as const) {
      expect(record[key].length).toBeGreaterThan(0);
    }
    expect(record.decidedAtUtc).toBeDefined();
  });
});

describe("README error table", () => {
  const readme = readFileSync(new URL("README.md", root), "utf8");
  const rows = [...readme.matchAll(/^\|\s*`([a-z.-]+)`\s*\|\s*`([A-Z_]+)`\s*\|\s*(yes|no)\s*\|/gm)].map((m) => ({
    category: m[1],
    grpcCode: m[2],
    retryable: m[3] === "yes",
  }));

  it("lists every category with the code and retry default the service uses", () => {
    expect(rows).toEqual(
      errorCategories.map(({ category, grpcCode, retryable }) => ({ category, grpcCode, retryable })),
    );
  });
});
