import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";
import { type Browser, type BrowserContext, chromium, type Locator, type Page } from "playwright-core";

/** Where Debian's chromium package puts its launcher, for a PATH that lacks /usr/bin. */
const DEBIAN_CHROMIUM = "/usr/bin/chromium";

/** What the console's tests and screenshots need and no browser download: Debian's package. */
const INSTALL = "sudo apt-get install -y --no-install-recommends chromium";

/** Thrown when no chromium can be found: the browser tests fail saying what to install, never skip. */
export class ChromiumMissing extends Error {
  constructor(readonly searched: string[]) {
    super(
      `chromium is not installed (looked for it on the PATH and at ${DEBIAN_CHROMIUM}): the web console's browser tests drive Debian's chromium; install it with:\n  ${INSTALL}\n(or run bash tools/system-packages.sh, which npm test runs first)`,
    );
    this.name = "ChromiumMissing";
  }
}

/** The chromium executable: the first `chromium` on the PATH, else Debian's; ChromiumMissing if none. */
export function findChromium(path: string = process.env.PATH ?? ""): string {
  const candidates = [...path.split(delimiter).filter((dir) => dir !== "").map((dir) => join(dir, "chromium")), DEBIAN_CHROMIUM];
  for (const candidate of candidates) {
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not there, or not executable: the next candidate.
    }
  }
  throw new ChromiumMissing(candidates);
}

/** How a page is opened. */
export interface ConsolePageOptions {
  /** The console's origin, e.g. `http://127.0.0.1:7071`: paths given to open() are relative to it. */
  baseURL: string;
  /** Default 1280x800, the size of the console's screenshots. */
  viewport?: { width: number; height: number };
  /** Default light. */
  colorScheme?: "light" | "dark";
}

/**
 * Debian's chromium, headless, driven by playwright-core (which never downloads a browser here).
 * Each page lives in a context of its own, so a token signed in on one page is unknown to the
 * next; close() ends every page and the browser.
 */
export class HeadlessChromium {
  readonly #contexts: BrowserContext[] = [];

  private constructor(readonly browser: Browser) {}

  static async launch(): Promise<HeadlessChromium> {
    const executablePath = findChromium();
    // Chromium's sandbox refuses to start as root (a CI container's user); as any other user it
    // stays on, as it would for a person running the console.
    const args = process.getuid?.() === 0 ? ["--no-sandbox"] : [];
    return new HeadlessChromium(await chromium.launch({ executablePath, headless: true, args }));
  }

  async newPage(options: ConsolePageOptions): Promise<ConsolePage> {
    const context = await this.browser.newContext({
      baseURL: options.baseURL,
      viewport: options.viewport ?? { width: 1280, height: 800 },
      colorScheme: options.colorScheme ?? "light",
    });
    this.#contexts.push(context);
    return new ConsolePage(await context.newPage(), () => this.#closeContext(context));
  }

  async close(): Promise<void> {
    for (const context of this.#contexts.splice(0)) await context.close();
    await this.browser.close();
  }

  async #closeContext(context: BrowserContext): Promise<void> {
    const at = this.#contexts.indexOf(context);
    if (at < 0) return;
    this.#contexts.splice(at, 1);
    await context.close();
  }
}

/**
 * A page of the console, with what the tests and screenshots do on every page: open a route,
 * sign in, find an element by its data-testid. It keeps what the page reported as errors (its
 * console's errors, uncaught exceptions, failed requests) for a failed test to print.
 */
export class ConsolePage {
  /** The page's own errors, oldest first. */
  readonly problems: string[] = [];

  constructor(
    readonly page: Page,
    /** Ends the page and its context (what it signed in with, its open streams). */
    readonly close: () => Promise<void>,
  ) {
    page.on("console", (message) => {
      if (message.type() === "error") this.problems.push(`console error: ${message.text()}`);
    });
    page.on("pageerror", (error) => this.problems.push(`uncaught: ${error.stack ?? error.message}`));
    page.on("requestfailed", (request) => {
      const reason = request.failure()?.errorText ?? "?";
      // Leaving a page aborts its open streams (the console's Watch): that is no failure.
      if (reason !== "net::ERR_ABORTED") this.problems.push(`request failed: ${request.method()} ${request.url()}: ${reason}`);
    });
  }

  /** Opens `path` (a route of the console, e.g. `/jobs/sweep`) and waits for its document to load. */
  async open(path: string): Promise<void> {
    await this.page.goto(path, { waitUntil: "load" });
  }

  /** The elements with `data-testid="ID"` (exactly that id). */
  testId(id: string): Locator {
    return this.page.getByTestId(id);
  }

  /** Signs in with `token` on the sign-in form the page shows, and waits for the identity it was given. */
  async signIn(token: string, timeoutMs = 30_000): Promise<void> {
    await this.testId("token").fill(token);
    await this.testId("signin-submit").click();
    await this.testId("whoami").waitFor({ state: "visible", timeout: timeoutMs });
  }
}
