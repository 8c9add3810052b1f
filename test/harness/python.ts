import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { TrackedProcess } from "./tracked-process.js";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/**
 * Debian's interpreter, with Debian's python3-grpcio and python3-protobuf. Not the `python3` on
 * PATH, which may be a pyenv shim without them.
 */
export const PYTHON = "/usr/bin/python3";
/** The reference agent and admin client under examples/, run as a user would. */
export const PYTHON_AGENT = join(ROOT, "examples", "python-agent", "agent.py");
export const PYTHON_ADMIN = join(ROOT, "examples", "python-admin", "admin_client.py");
/** What a user runs to generate the stubs; the tests generate through it too. */
export const GENERATE_STUBS = join(ROOT, "examples", "python-agent", "generate.sh");

/**
 * Generates the Python stubs of proto/shardline/v1 into `dir` with examples/python-agent/generate.sh,
 * after checking the toolchain. Throws, naming the Debian package to install, when a piece is
 * missing: CI installs them, so a missing one is a broken machine, not a reason to skip.
 */
export function generatePythonStubs(dir: string): void {
  if (!existsSync(PYTHON)) throw new Error(`${PYTHON} is missing: install Debian's python3 (apt-get install python3)`);
  const imports = spawnSync(PYTHON, ["-c", "import grpc, google.protobuf"], { encoding: "utf8" });
  if (imports.status !== 0) {
    throw new Error(`${PYTHON} cannot import grpc and google.protobuf: install python3-grpcio and python3-protobuf (apt-get install python3-grpcio python3-protobuf)\n${imports.stderr}`);
  }
  const generated = spawnSync("sh", [GENERATE_STUBS, dir], { encoding: "utf8" });
  if (generated.status !== 0) {
    // generate.sh names the missing package itself (protobuf-compiler, protobuf-compiler-grpc).
    throw new Error(`${GENERATE_STUBS} failed (exit ${generated.status}): ${generated.stderr.trim() || generated.error?.message}`);
  }
}

/** The environment a Python example runs in: the stubs importable, no bytecode left in the tree. */
function pythonEnv(stubs: string): Record<string, string> {
  return { PYTHONPATH: stubs, PYTHONDONTWRITEBYTECODE: "1", PYTHONUNBUFFERED: "1" };
}

/** Starts examples/python-agent/agent.py with `args`, as a TrackedProcess (output kept, killable). */
export function startPythonAgent(stubs: string, id: string, args: string[]): TrackedProcess {
  return new TrackedProcess(id, PYTHON, [PYTHON_AGENT, "--id", id, ...args], pythonEnv(stubs));
}

/** Admin client processes still running, so that a failed test can kill them. */
const runningAdmins = new Set<ChildProcess>();

/** Runs examples/python-admin/admin_client.py to completion. */
export function runPythonAdmin(stubs: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [PYTHON_ADMIN, ...args], { env: { ...process.env, ...pythonEnv(stubs) }, stdio: ["ignore", "pipe", "pipe"] });
    runningAdmins.add(child);
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    child.on("exit", (code) => {
      runningAdmins.delete(child);
      resolve({ code, stdout, stderr });
    });
  });
}

/** SIGKILLs every admin client process still running. */
export function killPythonAdmins(): void {
  for (const child of runningAdmins) child.kill("SIGKILL");
  runningAdmins.clear();
}
