import { describe, expect, it } from "vitest";
import { ShardlineError } from "../errors.js";
import { envReference, resolveHeaders } from "./env-reference.js";

describe("environment references in header values", () => {
  it("tells a reference, a malformed one and a plain value apart", () => {
    expect(envReference("${env:API_TOKEN}")).toBe("API_TOKEN");
    expect(envReference("${env:1BAD}")).toBe("");
    expect(envReference("${env:A} trailing")).toBe("");
    expect(envReference("Bearer x")).toBeUndefined();
  });

  it("replaces references with the environment's values and leaves plain values", () => {
    expect(resolveHeaders({ Authorization: "${env:TOKEN}", "X-Team": "finance" }, { TOKEN: "Bearer s3cret" }, "spec.http.headers")).toEqual({
      Authorization: "Bearer s3cret",
      "X-Team": "finance",
    });
  });

  it("refuses a variable that is not set, or holds a line break, naming the header and the variable only", () => {
    const attempt = (env: Record<string, string>) => {
      try {
        resolveHeaders({ Authorization: "${env:TOKEN}" }, env, "spec.onFailure.webhook.headers");
      } catch (error) {
        return error as ShardlineError;
      }
      throw new Error("resolved");
    };
    expect(attempt({}).message).toBe("spec.onFailure.webhook.headers.Authorization: ${env:TOKEN} names no environment variable of this process that can be a header value (set TOKEN, without line breaks)");
    const injected = attempt({ TOKEN: "x\r\nX-Evil: 1" });
    expect(injected.message).not.toContain("X-Evil");
  });
});
