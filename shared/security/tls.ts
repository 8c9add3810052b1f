import { X509Certificate, createPrivateKey, type KeyObject } from "node:crypto";
import { readFileSync } from "node:fs";
import type { PeerCertificate } from "node:tls";
import { experimental, type ChannelCredentials, type ServerCredentials } from "@grpc/grpc-js";
import { ShardlineError } from "../errors.js";

type CaUpdate = experimental.CaCertificateUpdate;
type IdentityUpdate = experimental.IdentityCertificateUpdate;
type CaListener = experimental.CaCertificateUpdateListener;
type IdentityListener = experimental.IdentityCertificateUpdateListener;

/** How often certificate files are read again by default: a renewed certificate is in use within a minute. */
export const DEFAULT_TLS_REFRESH_INTERVAL_MS = 60_000;

/** The PEM files of a TLS configuration. */
export interface TlsFiles {
  /** This side's certificate (with its chain, leaf first). Needs `key`. */
  cert?: string;
  /** The private key of `cert`. */
  key?: string;
  /**
   * The CA certificates (one or more, PEM) that sign the peer's certificate. On a server: client
   * certificates are then required and verified (mutual TLS). On a client: the controller's
   * certificate is verified against them; without them the client does not use TLS.
   */
  ca?: string;
}

/** Options of TlsCertificates.forServer and forClient. */
export interface TlsOptions extends TlsFiles {
  /**
   * How often the files are read again, in ms: a changed certificate, key or CA is used for new
   * connections from then on, without a restart. Default DEFAULT_TLS_REFRESH_INTERVAL_MS.
   */
  refreshIntervalMs?: number;
  /**
   * Called when the files changed but cannot be used (unreadable, not PEM, a key that does not
   * match the certificate, expired): the certificates read before stay in use. Reported once per
   * bad content. Default process.emitWarning.
   */
  onReloadError?: (error: ShardlineError) => void;
}

/** How errors name each setting: flags for the CLI, option paths for code. */
export interface TlsFieldNames {
  cert: string;
  key: string;
  ca: string;
  refreshIntervalMs: string;
}

/** The CLI's flag names, which errors name by default. */
export const TLS_FLAGS: TlsFieldNames = { cert: "--tls-cert", key: "--tls-key", ca: "--tls-ca", refreshIntervalMs: "--tls-refresh-interval" };

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;

/**
 * The certificates of one side of a TLS connection, read from files and checked at once (so a bad
 * file fails the start, naming its flag), then read again every refresh interval. A grpc-js
 * CertificateProvider over grpc-js's own FileWatcherCertificateProvider, which does the periodic
 * reading; in between, this one passes on only contents that parse and whose key matches the
 * certificate, and only when they changed: a certificate caught half-rotated (the new
 * certificate beside the old key) would otherwise make the server drop every new connection
 * until the next read.
 */
export class TlsCertificates implements experimental.CertificateProvider {
  readonly #files: Readonly<TlsFiles>;
  readonly #names: TlsFieldNames;
  readonly #watcher: experimental.FileWatcherCertificateProvider;
  readonly #onReloadError: (error: ShardlineError) => void;
  #identity: IdentityUpdate | undefined;
  #ca: CaUpdate | undefined;
  readonly #identityListeners = new Set<IdentityListener>();
  readonly #caListeners = new Set<CaListener>();
  #watching = false;
  /** The last reload error reported of each kind, so that the same bad files are reported once. */
  readonly #reported: { identity?: string; ca?: string } = {};
  #serverCredentials: ServerCredentials | undefined;
  #channelCredentials: ChannelCredentials | undefined;

  private constructor(files: TlsFiles, options: TlsOptions, names: TlsFieldNames) {
    this.#files = files;
    this.#names = names;
    this.#onReloadError = options.onReloadError ?? defaultOnReloadError;
    const refreshIntervalMs = options.refreshIntervalMs ?? DEFAULT_TLS_REFRESH_INTERVAL_MS;
    if (!Number.isFinite(refreshIntervalMs) || refreshIntervalMs < 10 || refreshIntervalMs > 86_400_000) {
      throw ShardlineError.invalid(names.refreshIntervalMs, refreshIntervalMs, "a number of milliseconds from 10 to 86400000 (a day)");
    }
    if (files.cert !== undefined) this.#identity = this.#readIdentity();
    if (files.ca !== undefined) this.#ca = this.#readCa();
    this.#watcher = new experimental.FileWatcherCertificateProvider({
      certificateFile: files.cert,
      privateKeyFile: files.key,
      caCertificateFile: files.ca,
      refreshIntervalMs,
    });
  }

  /**
   * A server's certificates (the controller's, an agent's HTTP port): none without any file;
   * `cert` and `key` together; `ca` to require client certificates signed by it. Throws a
   * ShardlineError naming the setting when a file is missing, unreadable, not PEM, expired, or
   * when the key does not match the certificate.
   */
  static forServer(options: TlsOptions, names: TlsFieldNames = TLS_FLAGS): TlsCertificates | undefined {
    const files = pickFiles(options);
    if (files.cert === undefined && files.key === undefined && files.ca === undefined) return undefined;
    checkPair(files, names);
    if (files.cert === undefined) {
      throw new ShardlineError(
        "invalid-argument",
        `${names.ca} needs ${names.cert} and ${names.key}: client certificates are verified only over TLS, which needs the server's own certificate and key`,
        { field: names.ca, value: files.ca, allowed: `${names.ca} with ${names.cert} and ${names.key}` },
      );
    }
    return new TlsCertificates(files, options, names);
  }

  /**
   * A client's certificates (an agent's, the CLI's): none without any file; `ca` to use TLS and
   * verify the server against it; `cert` and `key` too to present a client certificate, which
   * needs `ca`. Throws as forServer does.
   */
  static forClient(options: TlsOptions, names: TlsFieldNames = TLS_FLAGS): TlsCertificates | undefined {
    const files = pickFiles(options);
    if (files.cert === undefined && files.key === undefined && files.ca === undefined) return undefined;
    checkPair(files, names);
    if (files.ca === undefined) {
      // Without a CA the client speaks plaintext: a certificate given would silently go unused.
      throw new ShardlineError(
        "invalid-argument",
        `${names.cert} and ${names.key} need ${names.ca}: a client certificate is presented only over TLS, which a client uses when given the CA that signed the controller's certificate`,
        { field: names.ca, value: "nothing", allowed: `${names.ca} FILE with ${names.cert} and ${names.key}` },
      );
    }
    return new TlsCertificates(files, options, names);
  }

  /** True when this side has a certificate of its own (a server always does). */
  get hasIdentity(): boolean {
    return this.#files.cert !== undefined;
  }

  /** True when peers' certificates are verified against a CA: on a server, mutual TLS. */
  get verifiesPeers(): boolean {
    return this.#files.ca !== undefined;
  }

  /** The certificate and key in use now (PEM); undefined without a certificate of its own. */
  get identity(): IdentityUpdate | undefined {
    return this.#identity;
  }

  /**
   * The gRPC server's credentials: TLS with this certificate; with a CA, client certificates are
   * requested and a connection without one signed by the CA fails at the handshake.
   */
  serverCredentials(): ServerCredentials {
    if (!this.hasIdentity) throw new ShardlineError("internal", "server credentials need a certificate and key");
    // grpc-js 1.14's createCertificateProviderServerCredentials passes its FIRST argument to the
    // credentials as the IDENTITY provider and its second as the CA provider (see
    // server-credentials.js), the reverse of the parameter names in its .d.ts. Identity first.
    this.#serverCredentials ??= experimental.createCertificateProviderServerCredentials(this, this.verifiesPeers ? this : null, this.verifiesPeers);
    return this.#serverCredentials;
  }

  /** A channel's credentials: TLS verified against the CA, presenting this certificate when given one. */
  channelCredentials(): ChannelCredentials {
    this.#channelCredentials ??= experimental.createCertificateProviderChannelCredentials(this, this.hasIdentity ? this : null);
    return this.#channelCredentials;
  }

  addCaCertificateListener(listener: CaListener): void {
    this.#caListeners.add(listener);
    this.#watch();
    if (this.#ca !== undefined) process.nextTick(listener, this.#ca);
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.#caListeners.delete(listener);
    this.#unwatchWhenUnused();
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.#identityListeners.add(listener);
    this.#watch();
    if (this.#identity !== undefined) process.nextTick(listener, this.#identity);
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.#identityListeners.delete(listener);
    this.#unwatchWhenUnused();
  }

  /** Reads the files every refresh interval while anything listens (a listening server, an open channel). */
  #watch(): void {
    if (this.#watching) return;
    this.#watching = true;
    if (this.hasIdentity) this.#watcher.addIdentityCertificateListener(this.#onIdentityRead);
    if (this.verifiesPeers) this.#watcher.addCaCertificateListener(this.#onCaRead);
  }

  #unwatchWhenUnused(): void {
    if (!this.#watching || this.#identityListeners.size > 0 || this.#caListeners.size > 0) return;
    this.#watching = false;
    this.#watcher.removeIdentityCertificateListener(this.#onIdentityRead);
    this.#watcher.removeCaCertificateListener(this.#onCaRead);
  }

  readonly #onIdentityRead = (read: IdentityUpdate | null): void => {
    const unchanged = (update: IdentityUpdate): boolean =>
      this.#identity !== undefined && update.certificate.equals(this.#identity.certificate) && update.privateKey.equals(this.#identity.privateKey);
    if (read !== null && unchanged(read)) {
      this.#reported.identity = undefined;
      return;
    }
    // The watcher says only that a read failed: read again here to say which file and why.
    const checked = this.#reloaded("identity", () => (read === null ? this.#readIdentity() : this.#checkIdentity(read)));
    if (checked === undefined || unchanged(checked)) return;
    this.#identity = checked;
    for (const listener of this.#identityListeners) listener(checked);
  };

  readonly #onCaRead = (read: CaUpdate | null): void => {
    const unchanged = (update: CaUpdate): boolean => this.#ca !== undefined && update.caCertificate.equals(this.#ca.caCertificate);
    if (read !== null && unchanged(read)) {
      this.#reported.ca = undefined;
      return;
    }
    const checked = this.#reloaded("ca", () => (read === null ? this.#readCa() : this.#checkCa(read.caCertificate)));
    if (checked === undefined || unchanged(checked)) return;
    this.#ca = checked;
    for (const listener of this.#caListeners) listener(checked);
  };

  /** The checked new contents, or undefined (reported once) when they cannot be used. */
  #reloaded<T>(kind: "identity" | "ca", check: () => T): T | undefined {
    try {
      const checked = check();
      this.#reported[kind] = undefined;
      return checked;
    } catch (error) {
      const failure =
        error instanceof ShardlineError
          ? new ShardlineError(error.code, `${error.message}; the certificates read before stay in use`, error.details, { cause: error })
          : new ShardlineError("internal", `reading the TLS files again failed: ${String(error)}`, {}, { cause: error });
      if (failure.message !== this.#reported[kind]) {
        this.#reported[kind] = failure.message;
        this.#onReloadError(failure);
      }
      return undefined;
    }
  }

  #readIdentity(): IdentityUpdate {
    const certificate = readPem(this.#files.cert!, this.#names.cert);
    const privateKey = readPem(this.#files.key!, this.#names.key);
    return this.#checkIdentity({ certificate, privateKey });
  }

  #checkIdentity(update: IdentityUpdate): IdentityUpdate {
    const { cert: certFile, key: keyFile } = this.#files as Required<TlsFiles>;
    const [leaf] = parseCertificates(update.certificate, this.#names.cert, certFile);
    const key = parseKey(update.privateKey, this.#names.key, keyFile);
    if (!leaf!.checkPrivateKey(key)) {
      throw new ShardlineError(
        "invalid-argument",
        `${this.#names.key} ${keyFile}: this key does not belong to the certificate of ${this.#names.cert} ${certFile} (${describe(leaf!)})`,
        { field: this.#names.key, value: keyFile, allowed: `the private key of the certificate in ${certFile}` },
      );
    }
    checkValidNow(leaf!, this.#names.cert, certFile);
    return update;
  }

  #readCa(): CaUpdate {
    return this.#checkCa(readPem(this.#files.ca!, this.#names.ca));
  }

  #checkCa(caCertificate: Buffer): CaUpdate {
    parseCertificates(caCertificate, this.#names.ca, this.#files.ca!);
    return { caCertificate };
  }
}

/**
 * What a verified peer certificate says about who holds it: the subject's common name, then its
 * DNS and URI subject alternative names (a SPIFFE id, say), without repeats. Empty when there is
 * no certificate.
 */
export function certificateIdentities(certificate: PeerCertificate | undefined): string[] {
  if (certificate === undefined) return [];
  const identities = new Set<string>();
  const cn: unknown = certificate.subject?.CN;
  for (const name of Array.isArray(cn) ? cn : [cn]) if (typeof name === "string" && name !== "") identities.add(name);
  for (const { type, value } of subjectAltNames(certificate.subjectaltname ?? "")) {
    if ((type === "DNS" || type === "URI") && value !== "") identities.add(value);
  }
  return [...identities];
}

/**
 * Splits Node's rendering of subjectAltName, `DNS:a, URI:spiffe://b, IP Address:1.2.3.4`. A value
 * holding a comma or a quote is rendered as a JSON string (`DNS:"a, b"`), so it is read as one.
 */
function subjectAltNames(text: string): { type: string; value: string }[] {
  const names: { type: string; value: string }[] = [];
  let at = 0;
  while (at < text.length) {
    const colon = text.indexOf(":", at);
    if (colon < 0) break;
    const type = text.slice(at, colon).trim();
    let value: string;
    let end: number;
    if (text[colon + 1] === '"') {
      let close = colon + 2;
      while (close < text.length && text[close] !== '"') close += text[close] === "\\" ? 2 : 1;
      try {
        value = JSON.parse(text.slice(colon + 1, close + 1)) as string;
      } catch {
        value = "";
      }
      end = text.indexOf(",", close + 1);
    } else {
      end = text.indexOf(", ", colon + 1);
      value = text.slice(colon + 1, end < 0 ? text.length : end);
    }
    names.push({ type, value });
    if (end < 0) break;
    at = end + 1;
    while (text[at] === " ") at++;
  }
  return names;
}

function pickFiles(options: TlsFiles): TlsFiles {
  const present = (value: string | undefined): string | undefined => (value === undefined || value === "" ? undefined : value);
  return { cert: present(options.cert), key: present(options.key), ca: present(options.ca) };
}

function checkPair(files: TlsFiles, names: TlsFieldNames): void {
  if ((files.cert === undefined) === (files.key === undefined)) return;
  const [given, missing] = files.cert === undefined ? [names.key, names.cert] : [names.cert, names.key];
  throw new ShardlineError("invalid-argument", `${given} needs ${missing}: a certificate and its private key are given together`, {
    field: missing,
    value: "nothing",
    allowed: `${names.cert} FILE and ${names.key} FILE together`,
  });
}

function readPem(file: string, field: string): Buffer {
  try {
    return readFileSync(file);
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new ShardlineError("invalid-argument", `${field} ${file}: cannot read it (${reason}); expected a readable PEM file`, {
      field,
      value: file,
      allowed: "a readable PEM file",
    });
  }
}

/** Every certificate of a PEM bundle, first first; throws naming the field when there is none or one does not parse. */
function parseCertificates(pem: Buffer, field: string, file: string): X509Certificate[] {
  const blocks = pem.toString("latin1").match(PEM_CERTIFICATE) ?? [];
  const notPem = (why: string): ShardlineError =>
    new ShardlineError("invalid-argument", `${field} ${file}: ${why}; expected PEM certificates (-----BEGIN CERTIFICATE-----)`, {
      field,
      value: file,
      allowed: "PEM certificates",
    });
  if (blocks.length === 0) throw notPem("holds no certificate");
  return blocks.map((block, index) => {
    try {
      return new X509Certificate(block);
    } catch (error) {
      throw notPem(`certificate ${index + 1} does not parse (${(error as Error).message})`);
    }
  });
}

function parseKey(pem: Buffer, field: string, file: string): KeyObject {
  try {
    return createPrivateKey(pem);
  } catch (error) {
    throw new ShardlineError("invalid-argument", `${field} ${file}: not a private key (${(error as Error).message}); expected an unencrypted PEM private key`, {
      field,
      value: file,
      allowed: "an unencrypted PEM private key",
    });
  }
}

function checkValidNow(certificate: X509Certificate, field: string, file: string): void {
  const now = Date.now();
  const notBefore = Date.parse(certificate.validFrom);
  const notAfter = Date.parse(certificate.validTo);
  const problem = now > notAfter ? `expired on ${certificate.validTo}` : now < notBefore ? `is not valid before ${certificate.validFrom}` : undefined;
  if (problem === undefined) return;
  throw new ShardlineError("invalid-argument", `${field} ${file}: the certificate (${describe(certificate)}) ${problem}; renew it`, {
    field,
    value: file,
    allowed: "a certificate valid now",
  });
}

function describe(certificate: X509Certificate): string {
  return `${certificate.subject.replace(/\n/g, ", ")}, serial ${certificate.serialNumber}`;
}

function defaultOnReloadError(error: ShardlineError): void {
  process.emitWarning(error, { code: "SHARDLINE_TLS_RELOAD" });
}
