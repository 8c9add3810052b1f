import { create } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { AssignmentUpdateSchema } from "../../shared/gen/shardline/v1/agent_service_pb.js";
import { AssignmentSchema } from "../../shared/gen/shardline/v1/types_pb.js";
import { AssignmentTable, comparePairs } from "./assignment-table.js";

function a(job: string, shard: number, term: number, generation: number) {
  return create(AssignmentSchema, { shard: { job, shard }, term: BigInt(term), generation: BigInt(generation) });
}

function update(init: { snapshot?: boolean; add?: ReturnType<typeof a>[]; revoke?: ReturnType<typeof a>[] }) {
  return create(AssignmentUpdateSchema, init);
}

function summary(table: AssignmentTable): string[] {
  return table.list().map((h) => `${h.job}/${h.shard}@${h.term}.${h.generation}${h.revoking ? " revoking" : ""}`);
}

describe("comparePairs", () => {
  it("orders by term, then by generation", () => {
    expect(comparePairs({ term: 1n, generation: 9n }, { term: 2n, generation: 0n })).toBeLessThan(0);
    expect(comparePairs({ term: 2n, generation: 3n }, { term: 2n, generation: 2n })).toBeGreaterThan(0);
    expect(comparePairs({ term: 2n, generation: 2n }, { term: 2n, generation: 2n })).toBe(0);
  });
});

describe("AssignmentTable", () => {
  it("replaces the whole set on a snapshot and reports what was dropped", () => {
    const table = new AssignmentTable();
    table.apply(update({ add: [a("j", 0, 1, 1), a("j", 1, 1, 1)] }));
    const changes = table.apply(update({ snapshot: true, add: [a("j", 1, 1, 1), a("k", 0, 1, 2)] }));
    expect(summary(table)).toEqual(["j/1@1.1", "k/0@1.2"]);
    expect(changes.dropped.map((h) => `${h.job}/${h.shard}`)).toEqual(["j/0"]);
    expect(changes.added.map((h) => `${h.job}/${h.shard}`)).toEqual(["k/0"]);
  });

  it("an empty snapshot drops everything", () => {
    const table = new AssignmentTable();
    table.apply(update({ add: [a("j", 0, 1, 1)] }));
    expect(table.apply(update({ snapshot: true })).dropped).toHaveLength(1);
    expect(table.size).toBe(0);
  });

  it("ignores an add older than the pair held and takes a newer one", () => {
    const table = new AssignmentTable();
    table.apply(update({ add: [a("j", 0, 2, 5)] }));
    const older = table.apply(update({ add: [a("j", 0, 2, 4), a("j", 0, 1, 9)] }));
    expect(older.ignored).toHaveLength(2);
    expect(summary(table)).toEqual(["j/0@2.5"]);
    table.apply(update({ add: [a("j", 0, 3, 0)] }));
    expect(summary(table)).toEqual(["j/0@3.0"]);
  });

  it("takes a snapshot's pair as it is, older or newer than the one held: outside a snapshot an older add is ignored", () => {
    const table = new AssignmentTable();
    table.apply(update({ add: [a("j", 0, 2, 5), a("j", 1, 2, 5)] }));
    const changes = table.apply(update({ snapshot: true, add: [a("j", 0, 2, 4), a("j", 1, 3, 0)] }));
    expect(summary(table)).toEqual(["j/0@2.4", "j/1@3.0"]);
    expect(changes.ignored).toEqual([]);
    expect(changes.dropped).toEqual([]);
    expect(changes.added.map((h) => `${h.job}/${h.shard}`)).toEqual(["j/0", "j/1"]);
  });

  it("a snapshot that lists a shard being revoked ends the revoke, unless the same update revokes it again", () => {
    const table = new AssignmentTable();
    table.apply(update({ add: [a("j", 0, 1, 1), a("j", 1, 1, 1)] }));
    table.apply(update({ revoke: [a("j", 0, 1, 1), a("j", 1, 1, 1)] }));
    const changes = table.apply(update({ snapshot: true, add: [a("j", 0, 1, 1), a("j", 1, 1, 1)], revoke: [a("j", 1, 1, 1)] }));
    expect(summary(table)).toEqual(["j/0@1.1", "j/1@1.1 revoking"]);
    expect(changes.revoked.map((h) => `${h.job}/${h.shard}`)).toEqual(["j/1"]);
  });

  it("marks a revoked shard revoking with the revoke's pair", () => {
    const table = new AssignmentTable();
    table.apply(update({ add: [a("j", 0, 1, 1)] }));
    const changes = table.apply(update({ revoke: [a("j", 0, 1, 2)] }));
    expect(changes.revoked).toHaveLength(1);
    expect(summary(table)).toEqual(["j/0@1.2 revoking"]);
    expect(table.holds({ job: "j", shard: 0, term: 1n, generation: 2n })).toBe(false);
  });

  it("ignores a revoke older than the pair held", () => {
    const table = new AssignmentTable();
    table.apply(update({ add: [a("j", 0, 1, 3)] }));
    const changes = table.apply(update({ revoke: [a("j", 0, 1, 2)] }));
    expect(changes.ignored).toHaveLength(1);
    expect(summary(table)).toEqual(["j/0@1.3"]);
  });

  it("reports a revoke of a shard it does not hold, so the agent can release it at once", () => {
    const table = new AssignmentTable();
    expect(table.apply(update({ revoke: [a("j", 4, 1, 1)] })).unknownRevokes).toEqual([
      { job: "j", shard: 4, term: 1n, generation: 1n },
    ]);
  });

  it("holds exactly the pair it was given", () => {
    const table = new AssignmentTable();
    table.apply(update({ add: [a("j", 0, 1, 2)] }));
    expect(table.holds({ job: "j", shard: 0, term: 1n, generation: 2n })).toBe(true);
    expect(table.holds({ job: "j", shard: 0, term: 1n, generation: 1n })).toBe(false);
    expect(table.holds({ job: "j", shard: 1, term: 1n, generation: 2n })).toBe(false);
  });

  it("rejects messages whose term is lower than the highest seen", () => {
    const table = new AssignmentTable();
    expect(table.acceptTerm(2n)).toBe(true);
    expect(table.acceptTerm(2n)).toBe(true);
    expect(table.acceptTerm(1n)).toBe(false);
    expect(table.acceptTerm(3n)).toBe(true);
    expect(table.highestTerm).toBe(3n);
  });

  it("revokes everything when the agent leaves", () => {
    const table = new AssignmentTable();
    table.apply(update({ add: [a("j", 0, 1, 1), a("j", 1, 1, 1)] }));
    expect(table.revokeAll()).toHaveLength(2);
    expect(table.list().every((h) => h.revoking)).toBe(true);
  });
});
