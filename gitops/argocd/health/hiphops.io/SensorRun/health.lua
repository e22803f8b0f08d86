-- Argo CD health of a hiphops.io SensorRun: RUNNING is Progressing, COMPLETE Healthy and
-- FAILURE Degraded (with the run's error, or the first failed task's).
local hs = {}

if obj.status == nil or obj.status.state == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the run to start"
  return hs
end

local tasks = obj.status.tasks or {}
local finished = 0
local failed = nil
for _, task in ipairs(tasks) do
  if task.state == "COMPLETE" or task.state == "SKIPPED" or task.state == "FAILURE" then
    finished = finished + 1
  end
  if task.state == "FAILURE" and failed == nil then
    failed = task
  end
end

local state = obj.status.state
if state == "RUNNING" then
  hs.status = "Progressing"
  hs.message = tostring(finished) .. " of " .. tostring(#tasks) .. " tasks finished"
  return hs
end
if state == "COMPLETE" then
  hs.status = "Healthy"
  hs.message = "Complete"
  if obj.status.duration ~= nil then
    hs.message = hs.message .. " in " .. obj.status.duration
  end
  return hs
end
if state == "FAILURE" then
  hs.status = "Degraded"
  if obj.status.error ~= nil and obj.status.error ~= "" then
    hs.message = obj.status.error
  elseif failed ~= nil then
    hs.message = "task " .. tostring(failed.id) .. " (" .. tostring(failed.name) .. ") failed"
    if failed.error ~= nil then
      hs.message = hs.message .. ": " .. failed.error
    end
  else
    hs.message = "Failed"
  end
  return hs
end

hs.status = "Unknown"
hs.message = "Unknown run state " .. tostring(state)
return hs
