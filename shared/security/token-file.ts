import { createHash, timingSafeEqual } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { ShardlineError } from "../errors.js";
import { ROLES, type Role } from "./roles.js";

/** Who a token belongs to. */
export interface TokenHolder {
  /** The name the file gives it: what logs and denials show, never the token. */
  name: string;
  role: Role;
}

interface Entry extends TokenHolder {
  digest: Buffer;
}

/** The shortest token accepted: 128 bits as hex, or about as many as base64. */
export const MIN_TOKEN_LENGTH = 22;
const TOKEN = /^[A-Za-z0-9._~+/=-]+$/;
const NAME = /^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$/;
const FORMAT = "one token per line as TOKEN,NAME,ROLE";

/**
 * Parses a tokens file: one `TOKEN,NAME,ROLE` per line (as kube-apiserver's static token file
 * puts the token first), blank lines and `#` comments ignored. The token is at least
 * MIN_TOKEN_LENGTH characters of letters, digits and `._~+/=-`; NAME is unique in the file; ROLE
 * is viewer, operator, admin or agent. Errors name the file and line, never the token.
 */
export function parseTokenFile(text: string, path: string): TokenHolder[] & { digests: Buffer[] } {
  const entries: Entry[] = [];
  const names = new Set<string>();
  const digests = new Set<string>();
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) return;
    const where = `${path} line ${index + 1}`;
    const fields = line.split(",").map((field) => field.trim());
    if (fields.length !== 3) throw new ShardlineError("invalid-argument", `${where}: ${fields.length} fields; expected ${FORMAT}`, { field: where });
    const [token, name, role] = fields as [string, string, string];
    if (token.length < MIN_TOKEN_LENGTH || !TOKEN.test(token)) {
      throw new ShardlineError("invalid-argument", `${where}: the token is not allowed; expected at least ${MIN_TOKEN_LENGTH} letters, digits or ._~+/=- (e.g. openssl rand -hex 32)`, { field: where });
    }
    if (!NAME.test(name)) throw new ShardlineError("invalid-argument", `${where}: name ${JSON.stringify(name)} is not allowed; expected 1-128 letters, digits or ._@:-`, { field: where });
    if (names.has(name)) throw new ShardlineError("invalid-argument", `${where}: name ${name} is used twice; give each token its own name`, { field: where });
    if (!(ROLES as readonly string[]).includes(role)) {
      throw new ShardlineError("invalid-argument", `${where}: role ${JSON.stringify(role)} is not allowed; expected one of ${ROLES.join(", ")}`, { field: where });
    }
    const digest = sha256(token);
    if (digests.has(digest.toString("hex"))) throw new ShardlineError("invalid-argument", `${where}: this token is already given to another name`, { field: where });
    names.add(name);
    digests.add(digest.toString("hex"));
    entries.push({ name, role: role as Role, digest });
  });
  const holders = entries.map(({ name, role }) => ({ name, role }));
  return Object.assign(holders, { digests: entries.map((entry) => entry.digest) });
}

/**
 * The tokens of a file, read again when the file changes (a mounted Kubernetes Secret is
 * replaced in place when the Secret changes): rotating a token needs no restart. A change that
 * does not parse keeps the tokens in force and is reported through `onReloadError`.
 */
export class TokenFile {
  #holders: TokenHolder[] = [];
  #digests: Buffer[] = [];
  #stamp = "";

  constructor(
    readonly path: string,
    private readonly onReloadError: (error: unknown) => void = () => {},
  ) {
    this.#load();
  }

  /** How many tokens are in force. */
  get size(): number {
    return this.#holders.length;
  }

  /**
   * Who holds `token`, or undefined. Every token is compared, in constant time per token, so
   * the time taken tells nothing about which tokens exist.
   */
  authenticate(token: string): TokenHolder | undefined {
    this.#reloadIfChanged();
    const digest = sha256(token);
    let found: TokenHolder | undefined;
    this.#digests.forEach((candidate, index) => {
      if (timingSafeEqual(candidate, digest)) found = this.#holders[index];
    });
    return found;
  }

  #reloadIfChanged(): void {
    let stamp: string;
    try {
      stamp = this.#stampOf();
    } catch (error) {
      this.onReloadError(error);
      return;
    }
    if (stamp === this.#stamp) return;
    try {
      this.#load();
    } catch (error) {
      // Keep what is in force; ask again on the next call only once the file changes again.
      this.#stamp = stamp;
      this.onReloadError(error);
    }
  }

  #stampOf(): string {
    const stat = statSync(this.path);
    return `${stat.mtimeMs}:${stat.size}:${stat.ino}`;
  }

  #load(): void {
    let text: string;
    let stamp: string;
    try {
      stamp = this.#stampOf();
      text = readFileSync(this.path, "utf8");
    } catch (error) {
      throw new ShardlineError("invalid-argument", `--token-file: cannot read ${this.path}: ${error instanceof Error ? error.message : String(error)}`, { field: "--token-file" });
    }
    const parsed = parseTokenFile(text, this.path);
    this.#holders = [...parsed];
    this.#digests = parsed.digests;
    this.#stamp = stamp;
  }
}

function sha256(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}
