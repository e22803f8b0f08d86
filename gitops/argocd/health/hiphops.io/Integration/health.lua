-- Argo CD health of a hiphops.io Integration, from its Ready condition (credentials checked
-- against the tool, referenced Secrets present) and observedGeneration.
local hs = {}

local function condition(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, item in ipairs(conditions) do
    if item.type == kind then
      return item
    end
  end
  return nil
end

local function explain(item)
  local text = item.reason or ""
  if item.message ~= nil and item.message ~= "" then
    text = text .. ": " .. item.message
  end
  return text
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to check the integration"
  return hs
end

local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to check generation " .. tostring(generation)
  return hs
end

local ready = condition(obj.status.conditions, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to check the integration"
  return hs
end
if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to check generation " .. tostring(generation)
  return hs
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = explain(ready)
  if obj.status.webhookPath ~= nil then
    hs.message = hs.message .. " (webhook path " .. obj.status.webhookPath .. ")"
  end
  return hs
end
if ready.status == "False" then
  hs.status = "Degraded"
  hs.message = explain(ready)
  return hs
end
-- Unknown: not checked yet, or the tool could not be reached; the operator checks again.
hs.status = "Progressing"
hs.message = explain(ready)
return hs
