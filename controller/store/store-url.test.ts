import { describe, expect, it } from "vitest";
import { ShardlineError } from "../../shared/errors.js";
import { parseStoreUrl } from "./store-url.js";

describe("parseStoreUrl", () => {
  it("reads sqlite:PATH as an SQLite file", () => {
    expect(parseStoreUrl("sqlite:/var/lib/shardline/state.db")).toEqual({ kind: "sqlite", path: "/var/lib/shardline/state.db" });
    expect(parseStoreUrl("sqlite:relative/state.db")).toEqual({ kind: "sqlite", path: "relative/state.db" });
    expect(parseStoreUrl("sqlite::memory:")).toEqual({ kind: "sqlite", path: ":memory:" });
  });

  it("reads etcd://HOST:PORT,... as etcd endpoints under the default prefix", () => {
    expect(parseStoreUrl("etcd://etcd-0:2379,10.0.0.2:2379,[::1]:2379")).toEqual({
      kind: "etcd",
      endpoints: ["etcd-0:2379", "10.0.0.2:2379", "[::1]:2379"],
      prefix: "shardline/",
    });
  });

  it("takes a key prefix after the endpoints, ending it with a slash", () => {
    expect(parseStoreUrl("etcd://etcd-0:2379/prod/scheduler")).toEqual({ kind: "etcd", endpoints: ["etcd-0:2379"], prefix: "prod/scheduler/" });
    expect(parseStoreUrl("etcd://etcd-0:2379/prod/")).toEqual({ kind: "etcd", endpoints: ["etcd-0:2379"], prefix: "prod/" });
  });

  it.each(["", "sqlite:", "postgres://db:5432", "/var/lib/state.db", "etcd://", "etcd://host", "etcd://host:0", "etcd://a:2379,", "etcd://a:2379/x y", "etcd://a:2379//x"])(
    "rejects %j, naming --store and what is allowed",
    (value) => {
      let err: unknown;
      try {
        parseStoreUrl(value);
      } catch (error) {
        err = error;
      }
      expect(err).toBeInstanceOf(ShardlineError);
      const e = err as ShardlineError;
      expect(e.code).toBe("invalid-argument");
      expect(e.details.field).toBe("--store");
      expect(e.message).toContain("sqlite:PATH (e.g. sqlite:./shardline.db) or etcd://HOST:PORT[,HOST:PORT...][/PREFIX]");
    },
  );
});
