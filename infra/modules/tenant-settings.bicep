// The entries of the TENANTS app setting (issue 14 part 2, "Many tenants, one deployment"), built
// from main.bicep's tenants parameter and the outputs of the customer workspaces' deployments.
// A module of its own because Bicep cannot loop over module outputs in a variable (BCP182); here
// they arrive as a parameter. Creates nothing.
//
// Each entry: name, tenantId; for a tenant with its own workspace ingestionEndpoint, dcrImmutableId
// and (with workspace verification) workspaceId, the workspace's customer id; localDomains,
// graphQuotaRequests, graphQuotaHeadroom, enabled and useDeploymentContainer when the tenants item has them. A tenant
// without its own workspace gets no destination keys: the connector then uses the deployment's
// INGESTION_ENDPOINT, DCR_IMMUTABLE_ID and WORKSPACE_ID (shared table, rows told apart by
// SourceTenantId). No secret is in an entry.

@description('main.bicep\'s tenants parameter.')
param tenants array

@description('The distinct customer workspaces main.bicep deployed, as lower-case resource ids, in its order.')
param workspaceKeys array = []

@description('Per workspaceKeys item (same order): { ingestionEndpoint, dcrImmutableId, workspaceId } of its deployment.')
param destinations array = []

@description('Workspace verification is on: give tenants with their own workspace its workspaceId.')
param includeWorkspaceId bool = true

// Per tenant (tenants order): its own workspace as main.bicep keys it, or ''.
var tenantWorkspaceKeys = [for t in tenants: contains(t, 'workspaceResourceId') ? toLower(t.workspaceResourceId) : '']

// (name and tenantId come last only because checkov's pycep-parser cannot read an object literal
// as the first argument on a line of its own; key order means nothing in the JSON.)
var entries = [for (t, i) in tenants: union(
  empty(tenantWorkspaceKeys[i]) ? {} : {
    ingestionEndpoint: destinations[indexOf(workspaceKeys, tenantWorkspaceKeys[i])].ingestionEndpoint
    dcrImmutableId: destinations[indexOf(workspaceKeys, tenantWorkspaceKeys[i])].dcrImmutableId
  },
  empty(tenantWorkspaceKeys[i]) ? {} : includeWorkspaceId ? {
    workspaceId: destinations[indexOf(workspaceKeys, tenantWorkspaceKeys[i])].workspaceId
  } : {},
  contains(t, 'localDomains') ? {
    localDomains: t.localDomains
  } : {},
  contains(t, 'graphQuotaRequests') ? {
    graphQuotaRequests: t.graphQuotaRequests
  } : {},
  contains(t, 'graphQuotaHeadroom') ? {
    graphQuotaHeadroom: t.graphQuotaHeadroom
  } : {},
  contains(t, 'enabled') ? {
    enabled: t.enabled
  } : {},
  contains(t, 'useDeploymentContainer') ? {
    useDeploymentContainer: t.useDeploymentContainer
  } : {},
  {
    name: t.name
    tenantId: t.tenantId
  }
)]

@description('The TENANTS entries (no secrets).')
output entries array = entries

@description('The TENANTS app setting: the entries as JSON.')
output json string = string(entries)
