import type { ErrorCode } from "../../shared/errors.js";
import type { ExecutionLogChunk, ExecutionRecord, JobRecord, RevisionRecord, StoreBatch } from "./store-port.js";
import type { AgentCommand, CoreEvent } from "./messages.js";

/** A message for one agent session. */
export interface Outbound {
  session: string;
  command: AgentCommand;
}

/** A stream the shell must end, with the reason sent to the agent. */
export interface SessionClose {
  session: string;
  reason: string;
  /** The status the stream ends with; absent: ABORTED (the controller ended it). */
  code?: ErrorCode;
}

/**
 * Everything one or more core steps decided, in the order the shell must carry it out: first
 * make `persist` durable, then send `messages` in order, then close `closes`, then publish
 * `events`. Persisting first is what makes a fire durable before any agent can run it.
 */
export interface Effects {
  persist: StoreBatch;
  messages: Outbound[];
  closes: SessionClose[];
  events: CoreEvent[];
}

/** Accumulates effects between two `take()` calls, keeping only the last write of each record. */
export class Outbox {
  private jobs = new Map<string, JobRecord>();
  private deletedJobs = new Set<string>();
  private cursors = new Map<string, number>();
  private executions = new Map<string, ExecutionRecord>();
  private revisions: RevisionRecord[] = [];
  private logs: ExecutionLogChunk[] = [];
  private messages: Outbound[] = [];
  private closes: SessionClose[] = [];
  private events: CoreEvent[] = [];

  saveJob(job: JobRecord): void {
    this.deletedJobs.delete(job.name);
    this.jobs.set(job.name, job);
  }

  deleteJob(name: string): void {
    this.jobs.delete(name);
    this.deletedJobs.add(name);
    this.revisions = this.revisions.filter((revision) => revision.job !== name);
  }

  /** True when this batch deletes the job (and a job saved since under its name replaces it). */
  deletes(name: string): boolean {
    return this.deletedJobs.has(name);
  }

  saveRevision(revision: RevisionRecord): void {
    this.revisions.push(revision);
  }

  saveCursor(job: string, fireTime: number): void {
    this.cursors.set(job, fireTime);
  }

  /** Records the execution's current state; the record is copied so later changes need a new call. */
  saveExecution(execution: ExecutionRecord): void {
    this.executions.set(execution.id, { ...execution });
  }

  /** Adds lines to an execution's log; every chunk is kept, in order (a store merges them). */
  appendLog(chunk: ExecutionLogChunk): void {
    this.logs.push(chunk);
  }

  send(session: string, command: AgentCommand): void {
    this.messages.push({ session, command });
  }

  close(session: string, reason: string, code?: ErrorCode): void {
    this.closes.push(code === undefined ? { session, reason } : { session, reason, code });
  }

  emit(event: CoreEvent): void {
    this.events.push(event);
  }

  get empty(): boolean {
    return (
      this.jobs.size === 0 &&
      this.deletedJobs.size === 0 &&
      this.cursors.size === 0 &&
      this.executions.size === 0 &&
      this.revisions.length === 0 &&
      this.logs.length === 0 &&
      this.messages.length === 0 &&
      this.closes.length === 0 &&
      this.events.length === 0
    );
  }

  take(): Effects {
    const persist: StoreBatch = {};
    if (this.jobs.size > 0) persist.jobs = [...this.jobs.values()];
    if (this.deletedJobs.size > 0) persist.deletedJobs = [...this.deletedJobs];
    if (this.cursors.size > 0) {
      persist.cursors = [...this.cursors].map(([job, fireTime]) => ({ job, fireTime }));
    }
    if (this.executions.size > 0) persist.executions = [...this.executions.values()];
    if (this.revisions.length > 0) persist.revisions = this.revisions;
    if (this.logs.length > 0) persist.logs = this.logs;
    const effects: Effects = {
      persist,
      messages: this.messages,
      closes: this.closes,
      events: this.events,
    };
    this.jobs = new Map();
    this.deletedJobs = new Set();
    this.cursors = new Map();
    this.executions = new Map();
    this.revisions = [];
    this.logs = [];
    this.messages = [];
    this.closes = [];
    this.events = [];
    return effects;
  }
}
