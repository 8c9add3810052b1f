-- Argo CD health of a ShardedJob, from the conditions the controller writes in its status.
-- Install as the argocd-cm key resource.customizations.health.shardline.dev_ShardedJob
-- (docs/kubernetes.md, "Argo CD").
--   Degraded=True                         -> Degraded (its message)
--   status older than metadata.generation -> Progressing (the controller has not applied it yet)
--   Progressing=True                      -> Progressing (a rollout is under way)
--   Ready=True                            -> Healthy
--   anything else, or no status yet       -> Progressing
local hs = { status = "Progressing", message = "Waiting for the Shardline controller to apply the job" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local conditions = {}
for _, condition in ipairs(obj.status.conditions) do
  conditions[condition.type] = condition
end
local function says(condition)
  local text = condition.reason or ""
  if condition.message ~= nil and condition.message ~= "" then
    text = text .. ": " .. condition.message
  end
  return text
end
if conditions.Degraded ~= nil and conditions.Degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = says(conditions.Degraded)
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and (obj.status.observedGeneration == nil or obj.status.observedGeneration < generation) then
  return hs
end
if conditions.Progressing ~= nil and conditions.Progressing.status == "True" then
  hs.message = says(conditions.Progressing)
  return hs
end
if conditions.Ready ~= nil and conditions.Ready.status == "True" then
  hs.status = "Healthy"
  hs.message = says(conditions.Ready)
  return hs
end
if conditions.Ready ~= nil then
  hs.message = says(conditions.Ready)
end
return hs
