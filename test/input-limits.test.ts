import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Server } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { withAdminClient } from "../cli/commands/admin.js";
import { exitCodeOf } from "../cli/exit-codes.js";
import type { CliIo } from "../cli/output.js";
import { ShardlineError } from "../shared/errors.js";
import { AdminService } from "../shared/gen/shardline/v1/admin_service_pb.js";
import { addService, createServer, EncodedResponse, listen, shutdown } from "../shared/grpc/index.js";
import { adminClient, ControllerProcess, freePort, requireBuiltCli, shardline } from "./harness/processes.js";

const manifest = (name: string) => `apiVersion: shardline.dev/v1\nkind: ShardedJob\nmetadata: {name: ${name}}\nspec: {shards: 1, handler: work}\n`;

/** A manifest padded with a comment to `bytes` bytes in all. */
function paddedManifest(name: string, bytes: number): string {
  const head = `${manifest(name)}# `;
  return `${head}${"x".repeat(bytes - head.length - 1)}\n`;
}

/** What withAdminClient needs of a command's io when called from a test: no environment. */
const quietIo: CliIo = {
  stdout: () => {},
  stderr: () => {},
  readStdin: () => Promise.resolve(""),
  env: {},
  onSignal: () => () => {},
};

describe("input limits: a request or answer too large is bad input (exit 2), a controller at its limit is busy (exit 5)", () => {
  let dir: string;
  let controller: ControllerProcess;

  beforeAll(async () => {
    requireBuiltCli();
    dir = await mkdtemp(join(tmpdir(), "shardline-input-limits-"));
    controller = new ControllerProcess(await freePort(), join(dir, "state.db"), ["--max-jobs", "1"]);
    await controller.start();
  });

  afterAll(async () => {
    await controller?.process?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("refuses a 300 KiB manifest before connecting: exit 2 naming the file, its size and the fixed limit", async () => {
    const file = join(dir, "big.yaml");
    const text = paddedManifest("big", 300 * 1024);
    await writeFile(file, text);
    // Nothing listens there: had the CLI connected first, it would exit 5, "cannot reach".
    const nowhere = `127.0.0.1:${await freePort()}`;
    const result = await shardline(["apply", "-f", file], { SHARDLINE_CONTROLLER: nowhere });
    expect(result).toEqual({
      code: 2,
      stdout: "",
      stderr:
        `shardline: --file: "${file}" is ${300 * 1024} bytes; expected at most 262144 bytes (256 KiB) per manifest; ` +
        "the limit is fixed (no flag raises it): move large data out of the manifest, e.g. into a ConfigMap, or a file or URL the job reads; nothing was applied\n",
    });
  });

  it("applies nothing of a file whose second document is 10 MB, and says which document", async () => {
    const file = join(dir, "two.yaml");
    await writeFile(file, `${manifest("first")}---\n${paddedManifest("huge", 10 * 1024 * 1024)}`);
    const result = await shardline(["apply", "-f", file], { SHARDLINE_CONTROLLER: controller.address });
    expect(result.code).toBe(2);
    expect(result.stdout).toBe("");
    expect(result.stderr).toMatch(new RegExp(`^shardline: --file: "${file}", document 2 of 2 \\(job/huge\\), is \\d+ bytes; expected at most 262144 bytes \\(256 KiB\\) per manifest; the limit is fixed`));
    const admin = adminClient(controller.address);
    try {
      expect((await admin.listJobs({})).jobs.map((job) => job.name)).not.toContain("first");
    } finally {
      admin.close();
    }
  });

  it("makes a request over the controller's 4 MiB exit 2 naming the limit, never 'cannot reach'", async () => {
    // The CLI's own check keeps apply from sending this: the client under it is called directly.
    const refused = await withAdminClient({ controller: controller.address }, quietIo, (client) => client.applyJob({ manifest: "x".repeat(10 * 1024 * 1024) })).catch(
      (error: unknown) => error,
    );
    expect(refused).toBeInstanceOf(ShardlineError);
    expect(exitCodeOf(refused)).toBe(2);
    expect((refused as ShardlineError).message).toMatch(
      new RegExp(
        `^the request is \\d+ bytes, over the 4194304 bytes \\(4 MiB\\) the controller at ${controller.address.replaceAll(".", "\\.")} accepts in one message; ` +
          "the limit is fixed \\(no flag raises it\\): send less in one call$",
      ),
    );
  });

  it("makes an answer over the CLI's 128 MiB exit 2 saying how to ask for less, never 'cannot reach'", async () => {
    // A scripted controller: only the first bytes of the answer are read, its length prefix.
    const server: Server = createServer();
    addService(server, AdminService, { listExecutions: async () => new EncodedResponse(Buffer.alloc(129 * 1024 * 1024)) });
    const address = `127.0.0.1:${await listen(server, "127.0.0.1:0")}`;
    try {
      const result = await shardline(["get", "executions"], { SHARDLINE_CONTROLLER: address });
      expect(result.code).toBe(2);
      expect(result.stderr).toBe(
        `shardline: the answer of the controller at ${address} is ${129 * 1024 * 1024} bytes, over the 134217728 bytes (128 MiB) shardline accepts in one answer; ` +
          "the limit is fixed (no flag raises it): ask for less, e.g. get executions with a smaller --limit or --job, --agent or --state, or get jobs NAME for one job\n",
      );
    } finally {
      await shutdown(server, 0);
    }
  });

  it("refuses a new job past --max-jobs with exit 5 naming the flag", async () => {
    const one = join(dir, "one.yaml");
    const two = join(dir, "two-jobs.yaml");
    await writeFile(one, manifest("one"));
    await writeFile(two, manifest("two"));
    const created = await shardline(["apply", "-f", one], { SHARDLINE_CONTROLLER: controller.address });
    expect(created).toMatchObject({ code: 0, stdout: "job/one created\n" });
    // No agent is connected: the controller's warning follows, on stderr, and the exit stays 0.
    expect(created.stderr).toMatch(/^warning: job\/one: no connected agent can run it now: .*\n$/);
    expect(await shardline(["apply", "-f", two], { SHARDLINE_CONTROLLER: controller.address })).toEqual({
      code: 5,
      stdout: "",
      stderr: "shardline: manifest: this controller holds 1 jobs, its most (--max-jobs); delete one or raise the limit\n",
    });
  });

  describe("a controller with --admin-rate-limit 1", () => {
    let limited: ControllerProcess;

    beforeAll(async () => {
      limited = new ControllerProcess(await freePort(), join(dir, "limited.db"), ["--admin-rate-limit", "1"]);
      await limited.start();
    });

    afterAll(async () => {
      await limited?.process?.stop();
    });

    it("refuses a caller past it with exit 5 naming the flag, never 'cannot reach'", async () => {
      // This process keeps the bucket of 127.0.0.1 (the binary's address too) empty while the
      // binary runs. A token that comes back between two of its calls may still go to the
      // binary: then it is run again, a few times at most.
      const admin = adminClient(limited.address);
      let running = true;
      const drain = (async () => {
        while (running) {
          await admin.listJobs({}).catch(() => {});
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      })();
      try {
        let result = await shardline(["get", "jobs"], { SHARDLINE_CONTROLLER: limited.address });
        for (let attempt = 1; attempt < 5 && result.code === 0; attempt++) {
          result = await shardline(["get", "jobs"], { SHARDLINE_CONTROLLER: limited.address });
        }
        expect(result.code).toBe(5);
        expect(result.stderr).toMatch(/^shardline: ListJobs: too many calls from 127\.0\.0\.1; retry in \d+ ms \(the controller's --admin-rate-limit\)\n$/);
      } finally {
        running = false;
        await drain;
        admin.close();
      }
    });
  });
});
