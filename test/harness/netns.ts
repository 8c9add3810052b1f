import { execFileSync } from "node:child_process";

/**
 * A network namespace joined to this one by a veth pair on a private /30: the host end holds
 * `hostAddress`, the namespace end `nsAddress`. Taking the host end down cuts every packet
 * between the two (established connections just stall, as in a real partition) while the host
 * keeps its address: a process on the host still reaches a server bound to it.
 */
export interface NetnsLink {
  ns: string;
  hostIf: string;
  nsIf: string;
  hostAddress: string;
  nsAddress: string;
}

function ip(args: string[]): string {
  try {
    return execFileSync("ip", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (error) {
    const stderr = (error as { stderr?: string }).stderr?.trim();
    throw new Error(`ip ${args.join(" ")} failed: ${stderr || String(error)}`);
  }
}

/**
 * Why this machine cannot run the partition test, or undefined when it can: it needs the `ip`
 * command (iproute2) and the right to create network namespaces (root, or CAP_SYS_ADMIN and
 * CAP_NET_ADMIN). Tries a namespace of its own and removes it at once.
 */
export function netnsUnavailable(): string | undefined {
  try {
    execFileSync("ip", ["-V"], { stdio: "ignore" });
  } catch {
    return "the `ip` command (iproute2) is not installed";
  }
  const probe = `sl-${process.pid}-probe`;
  try {
    ip(["netns", "add", probe]);
  } catch (error) {
    return `\`ip netns add\` is not allowed here (${(error as Error).message}); the test needs root or CAP_SYS_ADMIN and CAP_NET_ADMIN`;
  }
  try {
    ip(["netns", "del", probe]);
  } catch {
    // Removed with the rest below if this failed; nothing else to do.
  }
  return undefined;
}

/** A /30 in 10.213.0.0/16 that no interface of this machine uses, chosen from the pid. */
function freeSubnet(): number {
  const used = ip(["-4", "-o", "addr", "show"]);
  for (let i = 0; i < 256; i++) {
    const octet = (process.pid + i) % 256;
    if (!used.includes(`10.213.${octet}.`)) return octet;
  }
  throw new Error("no free /30 in 10.213.0.0/16 for the test's veth pair");
}

/** Creates the namespace `sl-<pid>` and its veth pair, both ends up. Undoes what it did on failure. */
export function createNetnsLink(): NetnsLink {
  const octet = freeSubnet();
  const link: NetnsLink = {
    ns: `sl-${process.pid}`,
    hostIf: `slh-${process.pid}`,
    nsIf: `sln-${process.pid}`,
    hostAddress: `10.213.${octet}.1`,
    nsAddress: `10.213.${octet}.2`,
  };
  try {
    ip(["netns", "add", link.ns]);
    ip(["link", "add", link.hostIf, "type", "veth", "peer", "name", link.nsIf]);
    ip(["link", "set", link.nsIf, "netns", link.ns]);
    ip(["addr", "add", `${link.hostAddress}/30`, "dev", link.hostIf]);
    ip(["link", "set", link.hostIf, "up"]);
    ip(["netns", "exec", link.ns, "ip", "addr", "add", `${link.nsAddress}/30`, "dev", link.nsIf]);
    ip(["netns", "exec", link.ns, "ip", "link", "set", link.nsIf, "up"]);
    ip(["netns", "exec", link.ns, "ip", "link", "set", "lo", "up"]);
  } catch (error) {
    destroyNetnsLink(link);
    throw error;
  }
  return link;
}

/** Cuts the link: the host end goes down, so nothing crosses in either direction. */
export function cutNetnsLink(link: NetnsLink): void {
  ip(["link", "set", link.hostIf, "down"]);
}

/** Heals the link cut by cutNetnsLink. */
export function restoreNetnsLink(link: NetnsLink): void {
  ip(["link", "set", link.hostIf, "up"]);
}

/** `ip netns exec NS`: the prefix that runs a command inside the namespace. */
export function inNetns(link: NetnsLink): string[] {
  return ["ip", "netns", "exec", link.ns];
}

/**
 * Removes the veth pair and the namespace, whatever state they are in; safe to call twice.
 * Deleting one end of a veth pair deletes both.
 */
export function destroyNetnsLink(link: NetnsLink): string[] {
  const problems: string[] = [];
  for (const args of [
    ["link", "del", link.hostIf],
    ["netns", "del", link.ns],
  ]) {
    try {
      ip(args);
    } catch (error) {
      const message = (error as Error).message;
      if (!/Cannot find device|No such file|does not exist|Invalid argument/.test(message)) problems.push(message);
    }
  }
  return problems;
}
