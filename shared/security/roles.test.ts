import { describe, expect, it } from "vitest";
import { AdminService } from "../gen/shardline/v1/admin_service_pb.js";
import { ADMIN_METHOD_ROLES, ROLES, roleAllows } from "./roles.js";

describe("roles", () => {
  it("names a role for every AdminService method, and only for those", () => {
    expect(Object.keys(ADMIN_METHOD_ROLES).sort()).toEqual(AdminService.methods.map((m) => m.name).sort());
  });

  it("lets each admin role do what the ones below it do, and keeps agents apart", () => {
    const table = ROLES.map((role) => ROLES.filter((needed) => roleAllows(role, needed)));
    expect(Object.fromEntries(ROLES.map((role, i) => [role, table[i]]))).toEqual({
      viewer: ["viewer"],
      operator: ["viewer", "operator"],
      admin: ["viewer", "operator", "admin"],
      agent: ["agent"],
    });
  });
});
