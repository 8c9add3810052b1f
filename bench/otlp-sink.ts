/**
 * A stand-in for a user's OpenTelemetry collector: an OTLP/HTTP endpoint on loopback that takes
 * every export request, reads it whole and answers 200 with an empty ExportTraceServiceResponse
 * (an empty body is its encoding), as a collector that accepts everything does. It keeps
 * nothing; it counts requests and bytes so that a run can say its spans went out. Its CPU is
 * the collector's, which a user runs anyway, and is not counted as Shardline's.
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

export interface OtlpSink {
  /** The base URL to give as OTEL_EXPORTER_OTLP_ENDPOINT (`/v1/traces` is appended by the exporter). */
  readonly endpoint: string;
  /** Export requests and body bytes taken so far. */
  readonly received: { requests: number; bytes: number };
  close(): Promise<void>;
}

export async function startOtlpSink(): Promise<OtlpSink> {
  const received = { requests: 0, bytes: 0 };
  const server = createServer((request, response) => {
    request.on("data", (chunk: Buffer) => {
      received.bytes += chunk.length;
    });
    request.on("end", () => {
      received.requests++;
      response.writeHead(200, { "content-type": "application/x-protobuf" }).end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    received,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** The environment that turns tracing on, with the SDK's defaults otherwise, exporting to `sink`. */
export function tracingEnv(sink: OtlpSink): NodeJS.ProcessEnv {
  return { OTEL_EXPORTER_OTLP_ENDPOINT: sink.endpoint, OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf" };
}
