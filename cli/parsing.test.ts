import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { ShardlineError } from "../shared/errors.js";
import { AgentSchema, AgentState, ExecutionSchema, ExecutionState, JobSchema } from "../shared/gen/shardline/v1/types_pb.js";
import { agentStartOptions } from "./commands/agent.js";
import { applyOutcome, applyWarnings, checkManifestSizes, splitManifests } from "./commands/apply.js";
import { collectStrategy, controllerStartOptions } from "./commands/controller.js";
import { parseResource } from "./commands/get.js";
import { triggerOutcome } from "./commands/job-actions.js";
import { defaultAgentId, parseAgentId, parseAllowScript, parseInteger, parseLabel, parseLabelFromNode, parseSeconds, parseShardList, parseStore } from "./commands/options.js";
import { agentView, executionView, jobView, parseExecutionState } from "./commands/resources.js";
import { parseHostPort, resolveControllerAddress } from "./controller-address.js";
import { ExitCode, exitCodeOf } from "./exit-codes.js";
import { formatDuration, isoTime, oneLine, parseOutputFormat, renderDocument, renderTable, tableTime } from "./output.js";

/** The ShardlineError a parser throws, so its message can be checked. */
function failure(parse: () => unknown): ShardlineError {
  try {
    parse();
  } catch (error) {
    if (error instanceof ShardlineError) return error;
    throw error;
  }
  throw new Error("expected the parser to throw");
}

/** A usage error names the flag, the value, and what is accepted, on one line. */
function expectUsageError(parse: () => unknown, field: string): ShardlineError {
  const error = failure(parse);
  expect(error.code).toBe("invalid-argument");
  expect(error.message).toContain(field);
  expect(error.message).toMatch(/; expected /);
  expect(error.message).not.toContain("\n");
  return error;
}

describe("controller addresses", () => {
  it("accepts HOST:PORT with a hostname, an IPv4 address or a bracketed IPv6 address", () => {
    expect(parseHostPort("127.0.0.1:7070", "--controller")).toBe("127.0.0.1:7070");
    expect(parseHostPort("shardline-controller.ops.svc:7070", "--controller")).toBe("shardline-controller.ops.svc:7070");
    expect(parseHostPort("[::1]:7070", "--controller")).toBe("[::1]:7070");
  });

  it("rejects an address without a port, a port out of range, or port 0 for a client", () => {
    expectUsageError(() => parseHostPort("nocolon", "--controller"), "--controller");
    expectUsageError(() => parseHostPort("host:70000", "--controller"), "--controller");
    expectUsageError(() => parseHostPort("host:abc", "--controller"), "--controller");
    expectUsageError(() => parseHostPort(":7070", "--controller"), "--controller");
    expectUsageError(() => parseHostPort("::1:7070", "--controller"), "--controller");
    expectUsageError(() => parseHostPort("host:0", "--controller"), "--controller");
  });

  it("lets a listen address ask for any free port with 0", () => {
    expect(parseHostPort("127.0.0.1:0", "--listen", { listen: true })).toBe("127.0.0.1:0");
    expectUsageError(() => parseHostPort("127.0.0.1:65536", "--listen", { listen: true }), "--listen");
  });

  it("takes --controller first, then SHARDLINE_CONTROLLER, then 127.0.0.1:7070", () => {
    const env = { SHARDLINE_CONTROLLER: "ctl.example:9000" };
    expect(resolveControllerAddress("flag.example:1", env)).toBe("flag.example:1");
    expect(resolveControllerAddress(undefined, env)).toBe("ctl.example:9000");
    expect(resolveControllerAddress(undefined, {})).toBe("127.0.0.1:7070");
    expect(resolveControllerAddress(undefined, { SHARDLINE_CONTROLLER: "" })).toBe("127.0.0.1:7070");
  });

  it("names the environment variable when its value is the bad one", () => {
    expectUsageError(() => resolveControllerAddress(undefined, { SHARDLINE_CONTROLLER: "nocolon" }), "SHARDLINE_CONTROLLER");
  });
});

describe("flag values", () => {
  it("parses integers within their range and rejects anything else", () => {
    expect(parseInteger("3", "--capacity", 1, 10)).toBe(3);
    expectUsageError(() => parseInteger("abc", "--capacity", 1, 10), "--capacity");
    expectUsageError(() => parseInteger("2.5", "--capacity", 1, 10), "--capacity");
    expectUsageError(() => parseInteger("0", "--capacity", 1, 10), "--capacity");
    expectUsageError(() => parseInteger("11", "--capacity", 1, 10), "--capacity");
    expect(failure(() => parseInteger("abc", "--capacity", 1, 10)).message).toBe(
      '--capacity: "abc" is not allowed; expected an integer from 1 to 10',
    );
  });

  it("parses seconds as decimals", () => {
    expect(parseSeconds("1.5", "--drain-grace", 0, 60)).toBe(1.5);
    expect(parseSeconds("0", "--drain-grace", 0, 60)).toBe(0);
    expectUsageError(() => parseSeconds("-1", "--drain-grace", 0, 60), "--drain-grace");
    expectUsageError(() => parseSeconds("1e3", "--drain-grace", 0, 60), "--drain-grace");
    expectUsageError(() => parseSeconds("soon", "--drain-grace", 0, 60), "--drain-grace");
  });

  it("gathers repeated --label KEY=VALUE flags and rejects one without '='", () => {
    const labels = parseLabel("cluster=b", parseLabel("zone=eu-1"));
    expect(labels).toEqual({ zone: "eu-1", cluster: "b" });
    expect(parseLabel("topology.kubernetes.io/zone=")).toEqual({ "topology.kubernetes.io/zone": "" });
    expectUsageError(() => parseLabel("novalue"), "--label");
    expectUsageError(() => parseLabel("=x"), "--label");
    expectUsageError(() => parseLabel("zone=has space"), "--label");
    expectUsageError(() => parseLabel("zone=b", { zone: "a" }), "--label");
  });

  it("gathers repeated --label-from-node NODE_LABEL[=AGENT_LABEL] flags, one per agent label", () => {
    const copies = parseLabelFromNode("topology.kubernetes.io/region", parseLabelFromNode("topology.kubernetes.io/zone=zone"));
    expect(copies).toEqual([
      { from: "topology.kubernetes.io/zone", to: "zone" },
      { from: "topology.kubernetes.io/region", to: "topology.kubernetes.io/region" },
    ]);
    expectUsageError(() => parseLabelFromNode(""), "--label-from-node");
    expectUsageError(() => parseLabelFromNode("a=b=c"), "--label-from-node");
    expectUsageError(() => parseLabelFromNode("zone=has space"), "--label-from-node");
    expectUsageError(() => parseLabelFromNode("other/zone=zone", copies.concat({ from: "x", to: "zone" })), "--label-from-node");
  });

  it("parses --shards lists and ranges into distinct ascending numbers", () => {
    expect(parseShardList("0,2")).toEqual([0, 2]);
    expect(parseShardList("5,0-2,2")).toEqual([0, 1, 2, 5]);
    expectUsageError(() => parseShardList("a"), "--shards");
    expectUsageError(() => parseShardList("3-1"), "--shards");
    expectUsageError(() => parseShardList("1,,2"), "--shards");
  });

  it("accepts sqlite: and etcd:// stores only", () => {
    expect(parseStore("sqlite:./shardline.db")).toBe("sqlite:./shardline.db");
    expect(parseStore("etcd://etcd-0:2379,etcd-1:2379")).toBe("etcd://etcd-0:2379,etcd-1:2379");
    expectUsageError(() => parseStore("sqlite:"), "--store");
    expectUsageError(() => parseStore("postgres://db"), "--store");
    expectUsageError(() => parseStore("./shardline.db"), "--store");
  });

  it("derives a default agent id from the hostname, lowercased and sanitised", () => {
    expect(defaultAgentId("Worker-7.Example.COM")).toBe("worker-7.example.com");
    expect(defaultAgentId("my host (2)")).toBe("my-host-2");
    expect(defaultAgentId("--")).toBe("agent");
    expect(parseAgentId(defaultAgentId("My_Laptop!"))).toBe("my_laptop");
    expectUsageError(() => parseAgentId("-bad"), "--id");
  });

  it("gathers repeated --allow-script commands, once each, and rejects an empty one", () => {
    expect(parseAllowScript("python3")).toEqual(["python3"]);
    expect(parseAllowScript("/opt/jobs/rollup.sh", parseAllowScript("python3"))).toEqual(["python3", "/opt/jobs/rollup.sh"]);
    expect(parseAllowScript("python3", ["python3"])).toEqual(["python3"]);
    expectUsageError(() => parseAllowScript(""), "--allow-script");
  });

  it("passes --allow-script and --allow-http to the agent, and leaves them out when not given", () => {
    const io = { stdout: () => {}, stderr: () => {}, readStdin: async () => "", env: {}, onSignal: () => () => {} };
    expect(agentStartOptions({ allowScript: ["python3", "/bin/sh"], allowHttp: true, id: "a1" }, io, "host")).toEqual({
      controller: "127.0.0.1:7070",
      id: "a1",
      labels: {},
      allowScripts: ["python3", "/bin/sh"],
      allowHttp: true,
    });
    expect(agentStartOptions({ handlers: "./h.js" }, io, "Host")).toEqual({ controller: "127.0.0.1:7070", id: "host", labels: {} });
  });

  it("names --state values as the API's states, and rejects others", () => {
    expect(parseExecutionState("timed-out")).toBe(ExecutionState.TIMED_OUT);
    expect(parseExecutionState("misfired")).toBe(ExecutionState.MISFIRED);
    expect(parseExecutionState("unknown")).toBe(ExecutionState.UNKNOWN);
    const error = expectUsageError(() => parseExecutionState("unspecified"), "--state");
    expect(error.message).toContain("pending, running, succeeded, failed, timed-out, cancelled, lost, misfired, unknown");
  });

  it("accepts -o json, yaml or wide, and for events json only", () => {
    expect(parseOutputFormat("wide")).toBe("wide");
    expectUsageError(() => parseOutputFormat("xml"), "-o");
    expectUsageError(() => parseOutputFormat("yaml", ["json"]), "-o");
  });

  it("accepts a resource in plural or singular", () => {
    expect(parseResource("job")).toBe("jobs");
    expect(parseResource("executions")).toBe("executions");
    expectUsageError(() => parseResource("widgets"), "RESOURCE");
  });

  it("rejects a lease no longer than the heartbeat interval, counting the defaults", () => {
    const base = { listen: "127.0.0.1:0", http: "127.0.0.1:0", store: "sqlite::memory:" };
    const flags = { ...base, historyPerJob: 50, historyDays: 2, revisionHistory: 10, auditRetentionDays: 30, auditMaxRecords: 500 };
    const retention = { maxPerJob: 50, maxAgeMs: 2 * 86_400_000, revisionsPerJob: 10, audit: { maxAgeMs: 30 * 86_400_000, maxRecords: 500 } };
    expect(controllerStartOptions({ ...flags, heartbeatInterval: 100, leaseTtl: 400 }, "debug")).toEqual({
      ...base,
      heartbeatIntervalMs: 100,
      leaseTtlMs: 400,
      logLevel: "debug",
      retention,
    });
    expect(controllerStartOptions(flags, undefined)).toEqual({ ...base, retention });
    expect(failure(() => controllerStartOptions({ ...flags, heartbeatInterval: 3000 }, undefined)).code).toBe("invalid-argument");
    expect(failure(() => controllerStartOptions({ ...flags, leaseTtl: 500 }, undefined)).message).toMatch(/^--lease-ttl 500 .*; expected /);
  });

  it("passes every --strategy NAME=MODULE through to the controller, in order", () => {
    const flags = { listen: "127.0.0.1:0", http: "127.0.0.1:0", store: "sqlite::memory:", historyPerJob: 50, historyDays: 2, revisionHistory: 10, auditRetentionDays: 90, auditMaxRecords: 100_000 };
    const strategy = collectStrategy("zeta=/opt/zeta.mjs", collectStrategy("by-region=./examples/strategies/by-region.mjs"));
    expect(controllerStartOptions({ ...flags, strategy }, undefined).strategies).toEqual([
      { name: "by-region", modulePath: "./examples/strategies/by-region.mjs" },
      { name: "zeta", modulePath: "/opt/zeta.mjs" },
    ]);
    expect(controllerStartOptions(flags, undefined)).not.toHaveProperty("strategies");
  });

  it("refuses a --strategy without NAME=MODULE, with a built-in NAME, or with a NAME given twice", () => {
    expectUsageError(() => collectStrategy("by-region"), "--strategy");
    expectUsageError(() => collectStrategy("balanced=./b.mjs"), "--strategy");
    expect(expectUsageError(() => collectStrategy("a=./two.mjs", collectStrategy("a=./one.mjs")), "--strategy").message).toBe(
      '--strategy: "a=./two.mjs" is not allowed; expected each NAME once; "a" was already given',
    );
  });
});

describe("exit codes", () => {
  it("maps each error code to its documented exit code", () => {
    expect(exitCodeOf(new ShardlineError("invalid-argument", "x"))).toBe(ExitCode.usage);
    expect(exitCodeOf(new ShardlineError("not-found", "x"))).toBe(3);
    expect(exitCodeOf(new ShardlineError("already-exists", "x"))).toBe(4);
    expect(exitCodeOf(new ShardlineError("failed-precondition", "x"))).toBe(4);
    expect(exitCodeOf(new ShardlineError("unavailable", "x"))).toBe(5);
    expect(exitCodeOf(new ShardlineError("internal", "x"))).toBe(1);
    expect(exitCodeOf(new TypeError("bug"))).toBe(1);
  });
});

describe("rendering", () => {
  it("aligns table columns, hides wide ones unless asked, and leaves no trailing spaces", () => {
    const columns = [
      { header: "NAME", value: (row: { name: string; note: string }) => row.name },
      { header: "NOTE", value: (row: { name: string; note: string }) => row.note, wide: true },
    ];
    const rows = [
      { name: "a", note: "first\nline" },
      { name: "longer", note: "" },
    ];
    expect(renderTable(rows, columns)).toBe("NAME\na\nlonger\n");
    expect(renderTable(rows, columns, true)).toBe("NAME     NOTE\na        first line\nlonger\n");
  });

  it("writes times as ISO-8601, and null for none", () => {
    expect(isoTime(1_700_000_000_000n)).toBe("2023-11-14T22:13:20.000Z");
    expect(isoTime(0n)).toBeNull();
  });

  it("renders JSON and YAML documents", () => {
    expect(renderDocument([{ a: 1 }], "json")).toBe('[\n  {\n    "a": 1\n  }\n]\n');
    expect(renderDocument({ a: 1, b: null }, "yaml")).toBe("a: 1\nb: null\n");
  });

  it("formats durations for tables", () => {
    expect(formatDuration(850)).toBe("850ms");
    expect(formatDuration(12_340)).toBe("12.3s");
    expect(formatDuration(245_000)).toBe("4m05s");
    expect(formatDuration(7_800_000)).toBe("2h10m");
  });

  it("keeps a message to one line", () => {
    expect(oneLine("a\n  b\r\nc ")).toBe("a b c");
  });
});

describe("resource views", () => {
  it("maps executions to the JSON contract, with state names and null for absent values", () => {
    const execution = create(ExecutionSchema, {
      id: "j/1000/0/1",
      job: "j",
      shard: 0,
      fireTimeUnixMs: 1000n,
      attempt: 1,
      state: ExecutionState.TIMED_OUT,
      startedAtUnixMs: 1500n,
    });
    expect(executionView(execution)).toEqual({
      id: "j/1000/0/1",
      job: "j",
      shard: 0,
      fireTime: "1970-01-01T00:00:01.000Z",
      agent: null,
      attempt: 1,
      state: "timed-out",
      startedAt: "1970-01-01T00:00:01.500Z",
      finishedAt: null,
      error: null,
      result: null,
      cause: null,
      queuePosition: null,
      fireComplete: false,
      waitingReason: null,
      revision: null,
      traceId: null,
    });
  });

  it("names every execution and agent state the proto defines", () => {
    const names = [1, 2, 3, 4, 5, 6, 7, 8].map((state) => executionView(create(ExecutionSchema, { state })).state);
    expect(names).toEqual(["pending", "running", "succeeded", "failed", "timed-out", "cancelled", "lost", "misfired"]);
    const agentStates = [AgentState.READY, AgentState.DRAINING, AgentState.LOST].map((state) => agentView(create(AgentSchema, { state })).state);
    expect(agentStates).toEqual(["ready", "draining", "lost"]);
  });

  it("reads a job's schedule, zone, shards and handler from its spec_json", () => {
    const job = create(JobSchema, {
      name: "daemon",
      specJson: JSON.stringify({ name: "daemon", timeZone: "UTC", shards: 2, script: { command: ["run"] } }),
      revision: 4n,
    });
    expect(jobView(job)).toMatchObject({ name: "daemon", schedule: null, timeZone: "UTC", shards: 2, handler: "script", revision: 4, nextFire: null });
    expect(jobView(create(JobSchema, { name: "x", specJson: "not json" })).spec).toBeNull();
  });

  it("shows a spec_json that says what the job runs as runs in the manifest's fields", () => {
    const script = { command: "/usr/local/bin/rollup", args: [], env: {}, killGraceSeconds: 10 };
    const scriptJob = jobView(
      create(JobSchema, { name: "rollup", specJson: JSON.stringify({ name: "rollup", shards: 2, parameter: "", runs: { kind: "script", script }, strategy: "sticky" }) }),
    );
    expect(scriptJob.handler).toBe("script");
    expect(scriptJob.spec).toEqual({ name: "rollup", shards: 2, parameter: "", handler: "", script, strategy: "sticky" });
    expect(Object.keys(scriptJob.spec!)).toEqual(["name", "shards", "parameter", "handler", "script", "strategy"]);
    const handlerJob = jobView(create(JobSchema, { name: "billing", specJson: JSON.stringify({ name: "billing", runs: { kind: "handler", handler: "billing" } }) }));
    expect(handlerJob).toMatchObject({ handler: "billing", spec: { name: "billing", handler: "billing" } });
    expect(handlerJob.spec).not.toHaveProperty("runs");
  });
});

describe("apply", () => {
  it("says created for a first revision, configured for a later change, unchanged otherwise", () => {
    const job = (revision: bigint) => create(JobSchema, { name: "billing", revision });
    expect(applyOutcome({ job: job(1n), changed: true })).toBe("job/billing created");
    expect(applyOutcome({ job: job(2n), changed: true })).toBe("job/billing configured");
    expect(applyOutcome({ job: job(2n), changed: false })).toBe("job/billing unchanged");
  });

  it("sends a single manifest as written and splits a multi-document stream", () => {
    const one = "# billing\napiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: a}\n";
    expect(splitManifests(one)).toEqual([one]);
    expect(splitManifests(`---\n${one}---\n`)).toEqual([`---\n${one}---\n`]);
    const two = splitManifests("metadata: {name: a}\n---\nmetadata: {name: b}\n");
    expect(two).toHaveLength(2);
    expect(two[1]).toContain("name: b");
    expect(splitManifests("  \n")).toEqual([]);
    expect(splitManifests("{ broken")).toEqual(["{ broken"]);
  });

  it("prints each of the controller's warnings as warning: job/NAME: TEXT, on one line", () => {
    const job = create(JobSchema, { name: "billing", revision: 1n });
    expect(applyWarnings({ job, warnings: [] })).toEqual([]);
    expect(applyWarnings({ job, warnings: ["no connected agent runs handler billing", "two\nlines"] })).toEqual([
      "warning: job/billing: no connected agent runs handler billing",
      "warning: job/billing: two lines",
    ]);
  });

  it("refuses a file with a manifest over 256 KiB before sending any, naming the file, the document, its size and the limit", () => {
    const small = "metadata: {name: small}\n";
    const big = `metadata: {name: big}\n# ${"x".repeat(256 * 1024)}\n`;
    expect(() => checkManifestSizes("jobs.yaml", [small, "x".repeat(256 * 1024)])).not.toThrow();
    const one = expectUsageError(() => checkManifestSizes("big.yaml", [big]), "--file");
    expect(one.message).toBe(
      `--file: "big.yaml" is ${Buffer.byteLength(big)} bytes; expected at most 262144 bytes (256 KiB) per manifest; ` +
        "the limit is fixed (no flag raises it): move large data out of the manifest, e.g. into a ConfigMap, or a file or URL the job reads; nothing was applied",
    );
    const several = expectUsageError(() => checkManifestSizes("-", [small, big, big.replace("big", "bigger")]), "--file");
    expect(several.message).toMatch(/^--file: standard input, document 2 of 3 \(job\/big\), is \d+ bytes \(1 more of its documents is too\); expected at most 262144 bytes \(256 KiB\) per manifest; /);
  });

  it("describes a trigger by its fire time and execution count", () => {
    expect(triggerOutcome("j", { fireTimeUnixMs: 1_700_000_000_000n, executionIds: ["a", "b"] })).toBe(
      "job/j triggered: fire 2023-11-14T22:13:20Z, 2 executions",
    );
  });
});

describe("tableTime in a job's zone", () => {
  it("shows the zone's wall clock with its offset, UTC as Z, and milliseconds only when there are some", () => {
    const instant = Date.UTC(2026, 0, 1, 0, 0, 5);
    expect(tableTime(instant)).toBe("2026-01-01T00:00:05Z");
    expect(tableTime(instant, "UTC")).toBe("2026-01-01T00:00:05Z");
    expect(tableTime(instant, "Asia/Shanghai")).toBe("2026-01-01T08:00:05+08:00");
    expect(tableTime(instant + 42, "America/New_York")).toBe("2025-12-31T19:00:05.042-05:00");
    // Summer time moves the offset; a half-hour zone keeps its minutes; an offset of zero is +00:00.
    expect(tableTime(Date.UTC(2026, 6, 1, 12), "Europe/Berlin")).toBe("2026-07-01T14:00:00+02:00");
    expect(tableTime(Date.UTC(2026, 6, 1, 12), "Asia/Kolkata")).toBe("2026-07-01T17:30:00+05:30");
    expect(tableTime(Date.UTC(2026, 0, 1, 12), "Europe/London")).toBe("2026-01-01T12:00:00+00:00");
    expect(tableTime(0, "Asia/Shanghai")).toBe("<none>");
  });
});
