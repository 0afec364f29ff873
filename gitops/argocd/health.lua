-- Argo CD health of mta-operator.io Cluster, SendingDomain and SmtpCredential (one script for all three).
-- Healthy: Ready=True for the current generation. Degraded: Ready=False with a reason that needs a person
-- (TERMINAL below, generated from the operator's reason registry). Progressing: anything else, i.e. the
-- operator has not observed the latest spec yet, Ready is Unknown or missing, or Ready=False with a reason
-- that resolves by itself (MTAs starting, a referenced Cluster or Secret not created yet, DNS records not
-- published).
local TERMINAL = {
  SecretNotOwned = true,
  ChildNotOwned = true,
  StorageClassNotFound = true,
  SmarthostLoop = true,
  DkimSecretNotOwned = true,
  DkimKeyUnreadable = true,
  DkimKeyMismatch = true,
  UsernameConflict = true,
  CramMd5NotOffered = true,
}

local hs = {status = "Progressing", message = "Waiting for the operator to reconcile"}
if obj.status == nil then
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = nil
if obj.status.conditions ~= nil then
  for _, condition in ipairs(obj.status.conditions) do
    if condition.type == "Ready" then
      ready = condition
    end
  end
end
if ready == nil then
  hs.message = "No Ready condition yet"
  return hs
end
-- A condition computed from an older spec says nothing about the current one.
if generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation then
  hs.message = "Ready is from generation " .. tostring(ready.observedGeneration)
  return hs
end

local message = ready.message or ""
if ready.reason ~= nil and ready.reason ~= "" then
  message = ready.reason .. ": " .. message
end
if ready.status == "True" then
  hs.status = "Healthy"
elseif ready.status == "False" and ready.reason ~= nil and TERMINAL[ready.reason] then
  hs.status = "Degraded"
end
hs.message = message
return hs
