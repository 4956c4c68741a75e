// Microsoft Sentinel on the workspace: the onboarding state named `default` turns a Log
// Analytics workspace into a Sentinel workspace (Sentinel's analytics rules, hunting
// queries and workbooks for EmailEvents_CL need it). Deployed into the workspace's own
// resource group. Idempotent: on a workspace that already has Sentinel it changes nothing.
// Cost: Sentinel bills every GB the workspace ingests on top of Log Analytics
// (infra/README.md "Costs that matter").

@description('Name of the (new or existing) workspace in this resource group.')
param workspaceName string

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

// API version: the newest stable one in Azure/bicep-types-az (securityinsights 2025-09-01).
resource onboarding 'Microsoft.SecurityInsights/onboardingStates@2025-09-01' = {
  name: 'default'
  scope: workspace
  properties: {}
}

output id string = onboarding.id
