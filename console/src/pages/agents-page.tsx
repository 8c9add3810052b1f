import { useEffect } from "preact/hooks";
import type { Agent } from "../../../shared/gen/shardline/v1/types_pb.js";
import { formatTime, leaseText } from "../model/format.js";
import { agentStateName } from "../model/states.js";
import { ActionButton } from "../ui/action-button.js";
import { Link } from "../ui/router.js";
import { useSession } from "../ui/session.js";
import { useNow } from "../ui/use-now.js";

/** Every agent the controller knows: connected ones, and lost ones until their lease ends. */
export function AgentsPage() {
  const { live } = useSession();
  const now = useNow();
  useEffect(() => void (document.title = "Agents · Shardline"), []);
  const agents = [...live.agents.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
  const controllerNow = live.controllerNow(now);
  return (
    <section class="page page-wide">
      <div class="page-head">
        <h1>Agents</h1>
        <span class="muted">{agents.length === 1 ? "1 agent" : `${agents.length} agents`}</span>
      </div>
      {agents.length === 0 ? (
        <p class="muted">{live.synced ? "No agent is connected." : "Reading the agents…"}</p>
      ) : (
        <div class="table-wrap">
          <table class="data">
            <thead>
              <tr>
                <th scope="col">Id</th>
                <th scope="col">State</th>
                <th scope="col">Labels</th>
                <th scope="col" class="num">
                  Capacity
                </th>
                <th scope="col" class="num">
                  Running
                </th>
                <th scope="col" class="num">
                  Shards
                </th>
                <th scope="col">Lease</th>
                <th scope="col">Version</th>
                <th scope="col">Cordoned</th>
                <th scope="col">
                  <span class="visually-hidden">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {agents.map((agent) => (
                <AgentRow key={agent.id} agent={agent} controllerNow={controllerNow} />
              ))}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}

function AgentRow({ agent, controllerNow }: { agent: Agent; controllerNow: number }) {
  const { client } = useSession();
  const state = agentStateName(agent.state);
  const labels = Object.entries(agent.labels).sort(([a], [b]) => (a < b ? -1 : 1));
  const shardList = agent.shards.map((ref) => `${ref.job}/${ref.shard}`).join(", ");
  return (
    <tr data-testid="agent-row" data-agent={agent.id} data-state={state} data-cordoned={String(agent.cordoned)}>
      <td>
        <Link href={`/executions?agent=${encodeURIComponent(agent.id)}`} title={agent.instanceId === "" ? undefined : `instance ${agent.instanceId}`}>
          {agent.id}
        </Link>
        {agent.lastRefusal !== "" && (
          <div class="sub warn clip" title={agent.lastRefusal}>
            {agent.refusedHellos} refused: {agent.lastRefusal}
          </div>
        )}
      </td>
      <td>
        <span class={`badge agent-${state}`}>{state}</span>
      </td>
      <td>
        {labels.length === 0 ? (
          <span class="muted">—</span>
        ) : (
          labels.map(([key, value]) => (
            <span key={key} class="chip">
              {key}={value}
            </span>
          ))
        )}
      </td>
      <td class="num">
        {agent.capacity} / {agent.maxConcurrent === 0 ? "∞" : agent.maxConcurrent}
      </td>
      <td class="num">{agent.running}</td>
      <td class="num" title={shardList}>
        {agent.shards.length}
      </td>
      <td class={state === "lost" ? "warn" : ""} title={`lease until ${formatTime(agent.leaseExpiresUnixMs)} (controller's clock)`}>
        {leaseText(agent, controllerNow)}
      </td>
      <td>{agent.version === "" ? <span class="muted">—</span> : agent.version}</td>
      <td>{agent.cordoned ? "yes" : "no"}</td>
      <td class="row-actions">
        {agent.cordoned ? (
          <ActionButton small method="UncordonAgent" testid="action-uncordon" label="Uncordon" run={async () => {
            await client.uncordonAgent({ id: agent.id });
            return `Uncordoned ${agent.id}: it may receive shards again`;
          }} />
        ) : (
          <ActionButton
            small
            danger
            method="DrainAgent"
            testid="action-drain"
            label="Drain"
            confirm={{
              title: `Drain ${agent.id}?`,
              body: <p>Its {agent.shards.length === 1 ? "shard moves" : `${agent.shards.length} shards move`} to other agents as their runs end, and it receives no new ones until it is uncordoned. Its stream stays open.</p>,
              yes: `Drain ${agent.id}`,
            }}
            run={async () => {
              await client.drainAgent({ id: agent.id });
              return `Draining ${agent.id}`;
            }}
          />
        )}
      </td>
    </tr>
  );
}
