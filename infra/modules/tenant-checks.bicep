// Refuses, with one readable message, the main.bicep parameters a multi-tenant deployment cannot
// work with, before the customer workspaces, the Graph credential and the function app are
// deployed (they depend on this module). Its parameters are all known when the deployment starts,
// so `az deployment group validate` may already report it (it does at the latest when this module
// runs, before anything that depends on it). The connector checks the TENANTS
// setting again on every start (names, GUIDs, types); this module checks what Bicep can.
// checkov skips this file (infra/.checkov.yaml): its pycep-parser 0.5.1 cannot parse fail(),
// map() or objectKeys(); the module creates nothing.

@description('main.bicep\'s tenants parameter.')
param tenants array

@description('main.bicep\'s graphAuthMode.')
param graphAuthMode string

@description('main.bicep\'s clientId.')
param clientId string = ''

@description('Resource id of the deployment\'s own workspace (new or existing).')
param mainWorkspaceResourceId string

// The keys of a tenants entry (the TENANTS keys main.bicep builds from them are the spec's).
var allowedKeys = [
  'name'
  'tenantId'
  'workspaceResourceId'
  'localDomains'
  'graphQuotaRequests'
  'graphQuotaHeadroom'
  'enabled'
  'useDeploymentContainer'
]

var names = map(tenants, t => toLower(string(t.?name ?? '')))
var tenantIds = map(tenants, t => toLower(string(t.?tenantId ?? '')))
var unknownKeys = flatten(map(tenants, t => filter(objectKeys(t), key => !contains(allowedKeys, key))))
var incomplete = filter(tenants, t => empty(t.?name ?? '') || empty(t.?tenantId ?? ''))
var workspaceIds = filter(map(tenants, t => toLower(string(t.?workspaceResourceId ?? ''))), id => !empty(id))
var notWorkspaces = filter(
  workspaceIds,
  id => length(split(id, '/')) != 9 ? true : !endsWith(id, '/providers/microsoft.operationalinsights/workspaces/${last(split(id, '/'))}')
)

var managedIdentityMessage = 'graphAuthMode managed_identity cannot read other tenants (a managed identity signs in to its own tenant only): use graphAuthMode federated_identity (or client_secret) with clientId, a multi-tenant app registration consented in every customer tenant.'
var clientIdMessage = 'graphAuthMode federated_identity needs clientId (the multi-tenant app registration the managed identity signs in as).'
var incompleteMessage = 'Every tenants entry needs name and tenantId: ${string(incomplete)}.'
var unknownKeysMessage = 'Unknown keys in tenants: ${join(unknownKeys, ', ')} (allowed: ${join(allowedKeys, ', ')}).'
var duplicateNamesMessage = 'Tenant names must be unique: ${join(names, ', ')}.'
var duplicateTenantIdsMessage = 'Tenant tenantIds must be unique: ${join(tenantIds, ', ')}.'
var notWorkspacesMessage = 'Not a Log Analytics workspace resource id: ${join(notWorkspaces, ', ')}.'
var mainWorkspaceMessage = 'A tenant names the deployment\'s own workspace as workspaceResourceId: omit workspaceResourceId for it (it then shares the deployment\'s table and DCR; rows are told apart by SourceTenantId).'

var problems = flatten([
  graphAuthMode == 'managed_identity' && !empty(tenants) ? [managedIdentityMessage] : []
  graphAuthMode == 'federated_identity' && empty(clientId) ? [clientIdMessage] : []
  empty(incomplete) ? [] : [incompleteMessage]
  empty(unknownKeys) ? [] : [unknownKeysMessage]
  length(union(names, [])) == length(names) ? [] : [duplicateNamesMessage]
  length(union(tenantIds, [])) == length(tenantIds) ? [] : [duplicateTenantIdsMessage]
  empty(notWorkspaces) ? [] : [notWorkspacesMessage]
  contains(workspaceIds, toLower(mainWorkspaceResourceId)) ? [mainWorkspaceMessage] : []
])

// A variable (evaluated when this deployment starts), returned as the output.
var tenantCount = empty(problems) ? length(tenants) : fail(join(problems, ' '))

output tenantCount int = tenantCount
