// The report shows every scenario of a disclosure: a latency curve from its histogram and a
// throughput bar, with names escaped (they are data, not markup).
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { expect, it } from "vitest";
import { histogramArtifact, percentilesOf } from "../../src/bench/disclosure.js";
import { latencyHistogram } from "../../src/bench/load.js";
import { renderReport } from "../../src/bench/report.js";
import { BenchmarkDisclosureSchema } from "../../src/gen/envelope/v1/benchmark_disclosure_pb.js";

it("draws one curve and one bar per scenario, and escapes names", () => {
  const names = ["floor", 'admit <fast> & "lean"'];
  const results = names.map((scenario, i) => {
    const h = latencyHistogram();
    for (let v = 1; v <= 2000; v++) h.recordValue(100 * (i + 1) + v);
    return { scenario, h };
  });
  const disclosure = create(BenchmarkDisclosureSchema, {
    reviewedAtUtc: timestampFromMs(Date.parse("2026-11-22T00:00:00Z")),
    results: [
      ...results.map(({ scenario, h }, i) => ({
        scenario,
        achievedRate: 1000 * (i + 1),
        clientCpuShare: 0.25 * (i + 1),
        e2eUs: percentilesOf(h),
        e2eArtifact: `${i}.e2e`,
      })),
      ...[1, 4, 16].flatMap((concurrency) =>
        [1, 2].map((repetition) => ({
          scenario: "floor@sweep",
          loadModel: "closed-sweep",
          concurrency,
          repetition,
          achievedRate: 100 * concurrency,
        })),
      ),
    ],
    artifacts: results.map(({ h }, i) => histogramArtifact(`${i}.e2e`, h)),
    qualityChecks: [{ name: "ratio", observed: 0.5, comparison: ">=", threshold: 0.8, passed: false }],
    notes: ["peer <skipped>: fastify not installed"],
    method: { loadGenerator: "autocannon & grpc-js", coordinatedOmission: "open loop from intended send" },
  });
  const html = renderReport(disclosure, "run <1>");
  expect(html.match(/<path class="curve"/g)).toHaveLength(2);
  expect(html.match(/<rect class="bar"/g)).toHaveLength(2);
  // The sweep is its own chart: one line through one point per concurrency, not a bar.
  expect(html.match(/<path class="sweep"/g)).toHaveLength(1);
  expect(html.match(/<circle /g)).toHaveLength(3);
  expect(html).toContain("admit &lt;fast&gt; &amp; &quot;lean&quot;");
  expect(html).not.toContain("<fast>");
  expect(html).toContain("<title>run &lt;1&gt;</title>");
  expect(html).toContain("FAIL: ratio: 0.5 &gt;= 0.8");
  // What no figure says is said in words: notes, and how the load was made and timed.
  expect(html).toContain("<li>peer &lt;skipped&gt;: fastify not installed</li>");
  expect(html).toContain("<p>autocannon &amp; grpc-js</p><p>open loop from intended send</p>");
  // The load generator's CPU as a share of one core, per scenario.
  expect(html).toContain("<th>client cores</th>");
  expect(html).toContain("<td>0.50</td>");
  // The percentile axis reaches the nines the sample supports: 2000 values give 99.9 %.
  expect(html).toContain(">99.9%<");
});
