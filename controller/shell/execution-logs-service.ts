/**
 * AdminService.GetExecutionLogs: an execution's log, read from the store after the driver's
 * pending commits, a page at a time from a line number on. Following a running execution is
 * calling again from the answer's next_line (`shardline logs -f`, the console): a unary call
 * resumes through a leader change or a reconnect with nothing held on the controller between
 * calls, where a server stream would need a hub of its own beside Watch's.
 */
import { ShardlineError } from "../../shared/errors.js";
import type { AdminService } from "../../shared/gen/shardline/v1/admin_service_pb.js";
import type { ServiceImpl } from "../../shared/grpc/index.js";
import { readExecutionLog } from "../core/execution-log.js";
import { TERMINAL_STATES, type Store } from "../store/store.js";
import type { CoreDriver } from "./core-driver.js";
import { stateToProto, toNumber } from "./proto-mapping.js";

/** Lines one answer holds at most (GetExecutionLogsRequest.limit). */
export const MAX_LOG_LINES_PER_CALL = 10_000;

/** The admin service's bound on history reads served at once, which log reads share. */
export interface HistoryReads {
  run<T>(signal: AbortSignal, read: () => Promise<T>): Promise<T>;
}

export function executionLogsService(
  driver: CoreDriver,
  store: Store,
  historyReads: HistoryReads,
): Pick<ServiceImpl<typeof AdminService>, "getExecutionLogs"> {
  return {
    async getExecutionLogs(request, context) {
      if (request.limit > MAX_LOG_LINES_PER_CALL) {
        throw ShardlineError.invalid("limit", request.limit, `0 (${MAX_LOG_LINES_PER_CALL}) to ${MAX_LOG_LINES_PER_CALL}`);
      }
      const afterLine = toNumber(request.afterLine, "after_line");
      await driver.idle();
      const [execution, log] = await historyReads.run(context.signal, () =>
        Promise.all([store.getExecution(request.id), store.getExecutionLog?.(request.id)]),
      );
      if (execution === undefined) {
        throw new ShardlineError("not-found", `execution ${JSON.stringify(request.id)} not found`, { field: "id", value: request.id });
      }
      const page = readExecutionLog(log, afterLine, request.limit === 0 ? MAX_LOG_LINES_PER_CALL : request.limit);
      return {
        lines: page.lines.map((line) => ({ number: BigInt(line.number), timeUnixMs: BigInt(line.time), stream: line.stream, text: line.text })),
        nextLine: BigInt(page.nextLine),
        dropped: BigInt(page.dropped),
        finished: TERMINAL_STATES.has(execution.state),
        state: stateToProto(execution.state),
      };
    },
  };
}
