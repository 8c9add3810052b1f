import { mkdir, readFile, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import type { Command } from "commander";
import { Document } from "yaml";
import { ShardlineError } from "../../shared/errors.js";
import { parseManifest } from "../../shared/manifest/index.js";
import { readElasticJobConfig } from "../convert/elasticjob-config.js";
import { convertJob, type ConversionProblem, type JobConversion } from "../convert/elasticjob-job.js";
import { oneLine, type CliIo } from "../output.js";

/** The flags of `shardline convert elasticjob`, parsed. */
export interface ConvertElasticJobOptions {
  /** Write one NAME.yaml per job here instead of one multi-document YAML on stdout. */
  outputDir?: string;
}

export function registerConvert(program: Command, io: CliIo): void {
  const convert = program
    .command("convert")
    .summary("write ShardedJob manifests from another scheduler's job configuration")
    .description("Write ShardedJob manifests from another scheduler's job configuration, to apply with shardline apply -f.");
  convert
    .command("elasticjob")
    .summary("convert ElasticJob jobs (Spring Boot YAML or properties) to ShardedJob manifests")
    .description(
      [
        "Convert ElasticJob jobs to ShardedJob manifests: a Spring Boot application.yml or application.properties (elasticjob.jobs.NAME.*), or one job's configuration as ElasticJob's registry keeps it (jobName: ...).",
        "Writes one YAML document per job to stdout (or NAME.yaml files with --output-dir), each checked as shardline apply checks it.",
        "Every setting that has no equivalent, or changes meaning, is reported on stderr as 'warning: elasticjob job NAME: FIELD VALUE: why; what to do'.",
        "A job that cannot be converted (a Quartz year or W, a time zone with minutes) is reported as 'error: ...', nothing is written for it, and the command exits 2 after writing the others.",
        "See docs/migrating-from-elasticjob.md.",
      ].join(" "),
    )
    .argument("<FILE>", "the ElasticJob configuration file, or - for standard input")
    .option("--output-dir <DIR>", "write each job's manifest to DIR/NAME.yaml instead of stdout")
    .action(async (file: string, options: ConvertElasticJobOptions) => {
      await runConvertElasticJob(file, options, io);
    });
}

/**
 * `shardline convert elasticjob FILE`: reads the jobs, converts each, checks each manifest with
 * the controller's own parser, writes the converted ones, reports every problem on stderr, and
 * throws (exit 2) when a job could not be converted.
 */
export async function runConvertElasticJob(file: string, options: ConvertElasticJobOptions, io: CliIo): Promise<void> {
  const text = await readInput(file, io);
  const config = readElasticJobConfig(text, file);
  if (config.jobs.length === 0) {
    throw new ShardlineError(
      "invalid-argument",
      `${file}: holds no ElasticJob job; expected elasticjob.jobs.NAME settings (a Spring Boot application.yml or .properties) or a job configuration starting with jobName`,
      { field: "FILE", value: file },
    );
  }
  const source = file === "-" ? "standard input" : basename(file);
  const written: { name: string; text: string }[] = [];
  const failed: string[] = [];
  for (const other of config.others) {
    io.stderr(`${problemLine(otherProblem(other.key, other.value))}\n`);
  }
  for (const job of config.jobs) {
    const conversion = checked(convertJob(job), written);
    for (const problem of conversion.problems) io.stderr(`${problemLine(problem)}\n`);
    if (conversion.manifest === undefined) failed.push(job.name);
    else written.push({ name: String((conversion.manifest.metadata as { name: string }).name), text: manifestText(conversion, source) });
  }
  if (options.outputDir === undefined) {
    io.stdout(written.map((manifest) => manifest.text).join("---\n"));
  } else {
    await mkdir(options.outputDir, { recursive: true });
    for (const manifest of written) {
      const path = join(options.outputDir, `${manifest.name}.yaml`);
      await writeFile(path, manifest.text);
      io.stdout(`job/${manifest.name} written to ${path}\n`);
    }
  }
  if (failed.length > 0) {
    throw new ShardlineError(
      "invalid-argument",
      `${failed.length} of ${config.jobs.length} ElasticJob jobs could not be converted (${failed.join(", ")}); nothing was written for them; see the errors above`,
      { field: "FILE", value: file },
    );
  }
}

/**
 * The conversion with its manifest checked by parseManifest, as the controller will check it, and
 * against the names already written: a manifest that fails either is not written.
 */
function checked(conversion: JobConversion, written: readonly { name: string }[]): JobConversion {
  if (conversion.manifest === undefined) return conversion;
  const name = String((conversion.manifest.metadata as { name: string }).name);
  const refuse = (why: string, advice: string): JobConversion => ({
    ...conversion,
    manifest: undefined,
    problems: [...conversion.problems, { job: conversion.job, field: "jobName", value: conversion.job, why, advice, fatal: true }],
  });
  if (written.some((manifest) => manifest.name === name)) {
    return refuse(`becomes the job name ${name}, which another job of this file already has`, "rename one of them");
  }
  try {
    parseManifest(new Document(conversion.manifest).toString());
  } catch (error) {
    if (!(error instanceof ShardlineError)) throw error;
    return refuse(`makes a manifest Shardline refuses (${oneLine(error.message)})`, "change the setting the message names");
  }
  return conversion;
}

/** The manifest as YAML, with a comment naming where it came from. */
function manifestText(conversion: JobConversion, source: string): string {
  const document = new Document(conversion.manifest);
  document.commentBefore = ` Converted from ElasticJob job ${conversion.job} (${source}) by shardline convert elasticjob.`;
  return document.toString();
}

/** `warning: elasticjob job NAME: FIELD VALUE: why; what to do`, or `error: ...` for a job not converted. */
export function problemLine(problem: ConversionProblem): string {
  const subject = problem.job === undefined ? "elasticjob" : `elasticjob job ${problem.job}`;
  const value = problem.value === undefined ? "" : ` ${shown(problem.value)}`;
  const outcome = problem.fatal ? "; the job was not converted" : "";
  return oneLine(`${problem.fatal ? "error" : "warning"}: ${subject}: ${problem.field}${value}: ${problem.why}; ${problem.advice}${outcome}`);
}

function otherProblem(group: string, key: string): ConversionProblem {
  const registry = /^elasticjob\.reg-?center$/i.test(group);
  return {
    job: undefined,
    field: group,
    value: undefined,
    why: registry
      ? "no equivalent: there is no registry; the controller keeps the jobs, and agents find it by its address"
      : `no equivalent (from ${key}): settings outside the jobs are the controller's and the agents' own`,
    advice: registry ? "start agents with --controller HOST:PORT" : "see docs/migrating-from-elasticjob.md",
    fatal: false,
  };
}

function shown(value: string): string {
  return /^[^\s"']+$/.test(value) ? value : JSON.stringify(value);
}

async function readInput(file: string, io: CliIo): Promise<string> {
  if (file === "-") return io.readStdin();
  try {
    return await readFile(file, "utf8");
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : (error as Error).message;
    throw new ShardlineError(
      "invalid-argument",
      `FILE: cannot read "${file}" (${reason}); expected a readable ElasticJob configuration file, or - for standard input`,
      { field: "FILE", value: file },
      { cause: error },
    );
  }
}
