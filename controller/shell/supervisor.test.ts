import { describe, expect, it } from "vitest";
import { ShardlineError } from "../../shared/errors.js";
import { type Part, PartError, Supervisor } from "./supervisor.js";

/** A part that records what is done to it in `log`; each step can be made to fail or to hang. */
function part(
  name: string,
  log: string[],
  behaviour: { start?: () => Promise<void>; halt?: () => void | Promise<void>; stop?: () => Promise<void> } = {},
): Part {
  return {
    name,
    start: async () => {
      log.push(`start ${name}`);
      await behaviour.start?.();
    },
    halt: () => {
      log.push(`halt ${name}`);
      return behaviour.halt?.();
    },
    stop: async () => {
      log.push(`stop ${name}`);
      await behaviour.stop?.();
    },
  };
}

const never = (): Promise<void> => new Promise(() => {});

describe("Supervisor", () => {
  it("starts the parts in order, then halts all of them and stops each, newest first", async () => {
    const log: string[] = [];
    const supervisor = new Supervisor([part("servers", log), part("store", log), part("driver", log)]);
    await supervisor.start();
    expect(log).toEqual(["start servers", "start store", "start driver"]);
    log.length = 0;
    await supervisor.stop();
    expect(log).toEqual(["halt driver", "halt store", "halt servers", "stop driver", "stop store", "stop servers"]);
  });

  it("halts the newest part within the stop() call, before any turn of the event loop", async () => {
    const log: string[] = [];
    const supervisor = new Supervisor([part("servers", log), part("driver", log)]);
    await supervisor.start();
    const stopped = supervisor.stop();
    expect(supervisor.stopping).toBe(true);
    expect(log.at(-1)).toBe("halt driver");
    await stopped;
  });

  it("stops what started when a part in the middle fails to start, and rejects naming that part", async () => {
    const log: string[] = [];
    const refused = new ShardlineError("failed-precondition", "the SQLite store at /x.db is in use by another controller");
    const supervisor = new Supervisor([
      part("servers", log),
      part("store", log),
      part("leadership", log, { start: () => Promise.reject(refused) }),
      part("driver", log),
    ]);
    const error = await supervisor.start().catch((e: unknown) => e);
    expect(log).toEqual(["start servers", "start store", "start leadership", "halt store", "halt servers", "stop store", "stop servers"]);
    expect(error).toBeInstanceOf(PartError);
    // The operator reads the cause's own line and exit code; the part is named beside it.
    expect(error).toMatchObject({ part: "leadership", phase: "start", code: "failed-precondition", message: refused.message, cause: refused });
    expect(supervisor.stopping).toBe(true);
  });

  it("puts the part's name in front of a cause that is not a ShardlineError", async () => {
    const supervisor = new Supervisor([part("store", [], { start: () => Promise.reject(new TypeError("x is undefined")) })]);
    const error = await supervisor.start().catch((e: unknown) => e);
    expect(error).toMatchObject({ part: "store", code: "internal", message: "store failed to start: x is undefined" });
  });

  it("stops once however often stop() is called, all callers getting the same promise", async () => {
    const log: string[] = [];
    const supervisor = new Supervisor([part("servers", log), part("driver", log)]);
    await supervisor.start();
    const first = supervisor.stop();
    const second = supervisor.stop();
    expect(second).toBe(first);
    await Promise.all([first, second, supervisor.stop()]);
    expect(log.filter((entry) => entry.startsWith("stop"))).toEqual(["stop driver", "stop servers"]);
    expect(log.filter((entry) => entry.startsWith("halt"))).toEqual(["halt driver", "halt servers"]);
  });

  it("stops once when a part's halt calls stop() again (a failure that ends the process)", async () => {
    const log: string[] = [];
    let supervisor: Supervisor | undefined = undefined;
    let again: Promise<void> | undefined;
    const parts = [part("servers", log), part("driver", log, { halt: () => void (again = supervisor!.stop()) })];
    supervisor = new Supervisor(parts);
    await supervisor.start();
    await supervisor.stop();
    await again;
    expect(log.filter((entry) => !entry.startsWith("start"))).toEqual(["halt driver", "halt servers", "stop driver", "stop servers"]);
  });

  it("gives each halt and stop a bound: a part that hangs does not keep the others from stopping, and stop() names it", async () => {
    const log: string[] = [];
    const supervisor = new Supervisor([part("servers", log), part("store", log, { stop: never }), part("driver", log)], { stopTimeoutMs: 50 });
    await supervisor.start();
    const error = await supervisor.stop().catch((e: unknown) => e);
    expect(log.at(-1)).toBe("stop servers");
    expect(error).toMatchObject({ part: "store", phase: "stop", code: "unavailable", message: "the store did not stop within 50 ms" });
    // Later calls answer the same.
    expect(await supervisor.stop().catch((e: unknown) => e)).toBe(error);
  });

  it("stops every part when some fail to, and rejects with the first failure, the others listed in it", async () => {
    const log: string[] = [];
    const supervisor = new Supervisor([
      part("servers", log, { stop: () => Promise.reject(new Error("late")) }),
      part("store", log),
      part("driver", log, { halt: () => Promise.reject(new ShardlineError("unavailable", "etcd is gone")) }),
    ]);
    await supervisor.start();
    const error = (await supervisor.stop().catch((e: unknown) => e)) as PartError;
    expect(log.filter((entry) => !entry.startsWith("start"))).toEqual(["halt driver", "halt store", "halt servers", "stop driver", "stop store", "stop servers"]);
    expect(error).toMatchObject({ part: "driver", phase: "halt", message: "etcd is gone" });
    expect(error.others.map((other) => [other.part, other.phase, other.message])).toEqual([["servers", "stop", "servers failed to stop: late"]]);
  });

  it("waits for a part that is starting, then stops it with the others, and starts no more", async () => {
    const log: string[] = [];
    let finishStarting: () => void = () => {};
    const supervisor = new Supervisor([
      part("servers", log),
      part("store", log, { start: () => new Promise<void>((resolve) => (finishStarting = resolve)) }),
      part("driver", log),
    ]);
    const started = supervisor.start();
    await new Promise((resolve) => setImmediate(resolve));
    const stopped = supervisor.stop();
    finishStarting();
    await Promise.all([started, stopped]);
    expect(log).toEqual(["start servers", "start store", "halt store", "halt servers", "stop store", "stop servers"]);
  });

  it("starts nothing once stopped", async () => {
    const log: string[] = [];
    const supervisor = new Supervisor([part("servers", log)]);
    await supervisor.stop();
    await supervisor.start();
    expect(log).toEqual([]);
  });

  it("refuses two parts of one name", () => {
    expect(() => new Supervisor([part("store", []), part("store", [])])).toThrow(/two parts are named store/);
  });
});
