import { describe, expect, it } from "vitest";
import { describeStoreContract, execution, job } from "../store/testing/store-contract.js";
import { MemoryStore } from "./memory-store.js";

describeStoreContract(
  "MemoryStore",
  () => Promise.resolve(new MemoryStore()),
  (store) => store.open(),
);

describe("MemoryStore", () => {
  it("takes the next term at each open, and keeps what was committed", async () => {
    const store = new MemoryStore();
    expect((await store.open()).term).toBe(1);
    await store.commit({ jobs: [job("invoices")], cursors: [{ job: "invoices", fireTime: 1000 }], executions: [execution({ job: "invoices", fireTime: 1000, state: "running" })] });
    const snapshot = await store.open();
    expect(snapshot.term).toBe(2);
    expect(snapshot.jobs).toEqual([job("invoices")]);
    expect(snapshot.cursors).toEqual(new Map([["invoices", 1000]]));
    expect(snapshot.openExecutions.map((e) => e.id)).toEqual(["invoices/1000/0/1"]);
  });

  it("copies records in and out: what a caller keeps cannot change what is stored", async () => {
    const store = new MemoryStore();
    const record = execution({ job: "invoices", fireTime: 1000 });
    await store.commit({ executions: [record] });
    record.state = "failed";
    const read = await store.getExecution(record.id);
    read!.agent = "someone else";
    expect(await store.getExecution(record.id)).toMatchObject({ state: "succeeded", agent: "agent-a" });
  });
});
