import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { ExecutionContextSchema } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { fireTimeIso } from "./execution-run.js";

describe("fireTimeIso", () => {
  it("writes each context's own fire time, whatever came before", () => {
    const at = (fireTimeUnixMs: bigint) => fireTimeIso(create(ExecutionContextSchema, { fireTimeUnixMs }));
    expect(at(1_700_000_000_000n)).toBe("2023-11-14T22:13:20.000Z");
    expect(at(1_700_000_000_000n)).toBe("2023-11-14T22:13:20.000Z");
    expect(at(1_700_000_000_001n)).toBe("2023-11-14T22:13:20.001Z");
    expect(at(-1n)).toBe("1969-12-31T23:59:59.999Z");
    expect(at(0n)).toBe("1970-01-01T00:00:00.000Z");
    expect(at(1_700_000_000_000n)).toBe("2023-11-14T22:13:20.000Z");
  });
});
