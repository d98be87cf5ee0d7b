// Progress of a run: one line per step where stderr is not a terminal (CI logs), one bar rewritten
// in place where it is; both say what runs, its round, and the time elapsed against the estimate.
import { expect, it } from "vitest";
import { createProgress } from "../../src/bench/progress.js";

function fakeStream(isTTY: boolean) {
  const written: string[] = [];
  return { stream: { isTTY, columns: 200, write: (text: string) => written.push(text) }, written };
}

it("writes one line per step when the stream is not a terminal", () => {
  let ms = 0;
  const { stream, written } = fakeStream(false);
  const progress = createProgress({ plannedSeconds: 40, stream, now: () => ms });
  progress.step("floor-grpc-js", 1, 2, 10);
  ms = 20_000; // the first 10-second step took 20 seconds: the estimate doubles
  progress.step("admit-grpc-port", 1, 2, 10);
  ms = 30_000;
  progress.step("floor-grpc-js", 2, 2, 10);
  progress.finish();

  expect(written).toEqual([
    "floor-grpc-js round 1/2  0s / ~40s\n",
    "admit-grpc-port round 1/2  20s / ~1m20s\n",
    "floor-grpc-js round 2/2  30s / ~1m00s\n",
    "done in 30s\n",
  ]);
  expect(written.join("")).not.toContain("\r");
});

it("rewrites one bar in place on a terminal", () => {
  let ms = 0;
  const { stream, written } = fakeStream(true);
  const progress = createProgress({ plannedSeconds: 20, stream, now: () => ms });
  progress.step("admit-connect-proto-http1", 3, 6, 10);
  ms = 10_000;
  progress.step("admit-connect-proto-http1", 4, 6, 10);
  progress.finish();

  expect(written).toHaveLength(3);
  for (const text of written) expect(text.startsWith("\r\x1b[K")).toBe(true);
  expect(written[0]).toContain("[------------------------]   0% admit-connect-proto-http1 round 3/6  0s / ~20s");
  expect(written[1]).toContain("[############------------]  50% admit-connect-proto-http1 round 4/6  10s / ~20s");
  expect(written[2]).toBe("\r\x1b[Kdone in 10s\n");
});
