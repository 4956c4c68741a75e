// Secretless Graph access, with the Microsoft Graph Bicep extension (infra/bicepconfig.json,
// Bicep >= 0.36.1). The deploying principal needs Graph AppRoleAssignment.ReadWrite.All and
// Application.ReadWrite.All (delegated, e.g. as Privileged Role Administrator).
//   (a) the service principal of Microsoft's message trace app 8bd644d1-... must exist in the
//       tenant, or Graph answers 401 "Service principal-less Authentication failed";
//   (b) the function's managed identity gets the application permission
//       ExchangeMessageTrace.Read.All on Microsoft Graph (an app role assignment IS the
//       admin-consented grant);
//   (c) it also gets Domain.Read.All, to read the tenant's verified domains for Direction
//       (connector/tenant_domains.py; without it runs use LOCAL_DOMAINS).
// Without Graph rights, use infra/scripts/grant-graph-permission.sh (or .ps1) instead.

extension microsoftGraphV1

@description('Principal (object) id of the function app\'s managed identity.')
param principalId string

var microsoftGraphAppId = '00000003-0000-0000-c000-000000000000'
var messageTraceAppId = '8bd644d1-64a1-4d4b-ae52-2e0cbf64e373'
// ExchangeMessageTrace.Read.All (application)
var exchangeMessageTraceReadAllRoleId = '89b20d8a-76e2-4057-867b-9961f800b9a4'
// Domain.Read.All (application), https://learn.microsoft.com/graph/permissions-reference#domainreadall
var domainReadAllRoleId = 'dbb9058a-0e50-45d7-ae91-66909b5d4664'

resource microsoftGraph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: microsoftGraphAppId
}

resource messageTraceApp 'Microsoft.Graph/servicePrincipals@v1.0' = {
  appId: messageTraceAppId
}

resource messageTraceGrant 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  resourceId: microsoftGraph.id
  appRoleId: exchangeMessageTraceReadAllRoleId
  principalId: principalId
}

resource domainReadGrant 'Microsoft.Graph/appRoleAssignedTo@v1.0' = {
  resourceId: microsoftGraph.id
  appRoleId: domainReadAllRoleId
  principalId: principalId
}

output messageTraceServicePrincipalId string = messageTraceApp.id
output appRoleAssignmentId string = messageTraceGrant.id
