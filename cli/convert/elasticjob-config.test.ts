import { describe, expect, it } from "vitest";
import { readElasticJobConfig } from "./elasticjob-config.js";
import { parseJavaProperties } from "./java-properties.js";

describe("parseJavaProperties", () => {
  it("reads = : and blank separators, comments, continuations and escapes as java.util.Properties does", () => {
    const text = ["# comment", "! also a comment", "a=1", "b: two", "c three", "d=0=x,\\", "   1=y", "e=tab\\there \\u00e9", "f\\=g=h", "#---", "a=later"].join("\n");
    expect(Object.fromEntries(parseJavaProperties(text))).toEqual({ a: "later", b: "two", c: "three", d: "0=x,1=y", e: "tab\there é", "f=g": "h" });
  });
});

describe("readElasticJobConfig", () => {
  it("reads the Spring Boot starter's YAML, with relaxed names, props and lists", () => {
    const config = readElasticJobConfig(
      [
        "elasticjob:",
        "  reg-center: {server-lists: 'zk:2181', namespace: demo}",
        "  jobs:",
        "    myJob:",
        "      sharding-total-count: 2",
        "      cron: 0/5 * * * * ?",
        "      jobListenerTypes: [a, b]",
        "      props: {script.command.line: echo hi}",
      ].join("\n"),
      "application.yml",
    );
    expect(config.jobs).toEqual([
      {
        name: "myJob",
        settings: new Map([["shardingTotalCount", "2"], ["cron", "0/5 * * * * ?"], ["jobListenerTypes", "a,b"]]),
        props: new Map([["script.command.line", "echo hi"]]),
      },
    ]);
    expect(config.others).toEqual([{ key: "elasticjob.reg-center", value: "elasticjob.reg-center.server-lists" }]);
  });

  it("reads flat properties, with [NAME] for a name with dots and list items by index", () => {
    const config = readElasticJobConfig(
      ["elasticjob.jobs[billing.rollup].cron=0 0 1 * * ?", "elasticjob.jobs[billing.rollup].job-listener-types[0]=a", "elasticjob.jobs[billing.rollup].jobListenerTypes[1]=b", "spring.application.name=x"].join("\n"),
      "application.properties",
    );
    expect(config.jobs).toEqual([{ name: "billing.rollup", settings: new Map([["cron", "0 0 1 * * ?"], ["jobListenerTypes", "a,b"]]), props: new Map() }]);
    expect(config.others).toEqual([]);
  });

  it("reads properties given without the .properties extension (standard input)", () => {
    expect(readElasticJobConfig("elasticjob.jobs.a.cron=0 * * * * ?\nelasticjob.jobs.a.sharding-total-count=1\n", "-").jobs.map((job) => job.name)).toEqual(["a"]);
  });

  it("reads one job's configuration as ElasticJob's registry keeps it", () => {
    const config = readElasticJobConfig(
      ["jobName: settle", "cron: 0 0 2 * * ?", "shardingTotalCount: 3", "props: {}", "jobExtraConfigurations:", "  - {tracing: rdb}"].join("\n"),
      "config.yaml",
    );
    expect(config.jobs).toEqual([{ name: "settle", settings: new Map([["cron", "0 0 2 * * ?"], ["shardingTotalCount", "3"], ["jobExtraConfigurations", "{...}"]]), props: new Map() }]);
  });

  it("refuses YAML that does not parse, naming the file", () => {
    expect(() => readElasticJobConfig("elasticjob:\n  jobs: [\n", "broken.yml")).toThrow(/broken\.yml: not valid YAML/);
  });
});
