-- Argo CD health of a hiphops.io Sensor, from the conditions the operator writes:
-- Ready (Loaded | Disabled | Invalid), Stalled, IntegrationsReady, and observedGeneration.
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
  hs.message = "Waiting for the operator to load the sensor"
  return hs
end

local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to load generation " .. tostring(generation)
  return hs
end

local ready = condition(obj.status.conditions, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to load the sensor"
  return hs
end
if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to load generation " .. tostring(generation)
  return hs
end

local stalled = condition(obj.status.conditions, "Stalled")
if ready.status == "False" or (stalled ~= nil and stalled.status == "True") then
  hs.status = "Degraded"
  hs.message = explain(ready)
  return hs
end
if ready.status ~= "True" then
  hs.status = "Progressing"
  hs.message = explain(ready)
  return hs
end
if ready.reason == "Disabled" then
  hs.status = "Suspended"
  hs.message = explain(ready)
  return hs
end

local integrations = condition(obj.status.conditions, "IntegrationsReady")
if integrations ~= nil and integrations.status == "False" then
  hs.status = "Degraded"
  hs.message = explain(integrations)
  return hs
end
if integrations ~= nil and integrations.status ~= "True" then
  hs.status = "Progressing"
  hs.message = explain(integrations)
  return hs
end

hs.status = "Healthy"
hs.message = explain(ready)
return hs
