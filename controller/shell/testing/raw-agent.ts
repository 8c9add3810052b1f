import { AgentService, type ConnectResponse } from "../../../shared/gen/shardline/v1/agent_service_pb.js";
import { createClient, type GrpcStatus } from "../../../shared/grpc/index.js";

/** A raw agent speaking the proto by hand, as a stranger in another language would. */
export function rawAgent(address: string) {
  const client = createClient(AgentService, address);
  const stream = client.connect();
  const inbox: ConnectResponse[] = [];
  const waiters: (() => void)[] = [];
  let closed: GrpcStatus | undefined;
  stream.onMessage((m) => {
    inbox.push(m);
    waiters.splice(0).forEach((w) => w());
  });
  stream.onClose((s) => {
    closed = s;
    waiters.splice(0).forEach((w) => w());
  });
  return {
    stream,
    inbox,
    get closed() {
      return closed;
    },
    /** Resolves with the first message (already received or to come) that matches. */
    async next<K extends ConnectResponse["kind"]["case"]>(kind: K): Promise<Extract<ConnectResponse["kind"], { case: K }>["value"]> {
      for (;;) {
        const index = inbox.findIndex((m) => m.kind.case === kind);
        if (index >= 0) return inbox.splice(index, 1)[0]!.kind.value as never;
        if (closed !== undefined) throw new Error(`stream closed (${closed.code} ${closed.details}) before a ${kind}`);
        await new Promise<void>((resolve) => waiters.push(resolve));
      }
    },
    async closedStatus(): Promise<GrpcStatus> {
      while (closed === undefined) await new Promise<void>((resolve) => waiters.push(resolve));
      return closed;
    },
    close: () => client.close(),
  };
}
