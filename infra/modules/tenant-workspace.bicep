// One customer's own workspace (a `tenants` entry of main.bicep with workspaceResourceId),
// deployed by main.bicep into that workspace's resource group (scope: resourceGroup(sub, rg)):
// the same three tables (EmailEvents_CL, MessageTraceHealth_CL, MessageTraceDetail_CL) and the same Direct DCR as the
// deployment's own workspace, from the same schema files (table.bicep, dcr.bicep), with
// Monitoring Metrics Publisher for the function's identity on the DCR and, with workspace
// verification, the same table-level read access (custom query role + Reader on the table).
// Tenants sharing one workspace share this one deployment (main.bicep deploys each distinct
// workspace once).
//
// The function's managed identity lives in the Entra tenant of the deployment's subscription and
// can be granted roles only there: a role assignment in another tenant cannot name it, and Azure
// Lighthouse delegates neither roles with DataActions (Monitoring Metrics Publisher has them) nor
// custom roles. A workspace in a subscription of another tenant is therefore refused here, before
// anything is created in its resource group (infra/README.md "Many tenants").
// checkov skips this file (infra/.checkov.yaml): its pycep-parser 0.5.1 cannot parse fail(). It
// declares only modules (table.bicep, dcr.bicep: checkov scans those) and an existing workspace.

targetScope = 'resourceGroup'

@description('Name of the customer\'s existing workspace in this resource group.')
param workspaceName string

@description('DCR name (a kind Direct DCR name has at most 30 characters).')
@maxLength(30)
param dcrName string

@description('Prefix of the nested deployment names (unique per connector deployment and workspace).')
param deploymentPrefix string

@description('Tags of the DCR.')
param tags object = {}

@description('Parsed connector/data/EmailEvents_CL.json.')
param schema object

@description('Parsed connector/data/MessageTraceHealth_CL.json.')
param healthSchema object

@description('Parsed connector/data/MessageTraceDetail_CL.json.')
param detailSchema object

@description('Plan of EmailEvents_CL.')
@allowed([
  'Analytics'
  'Basic'
])
param tablePlan string = 'Analytics'

@description('Interactive retention of EmailEvents_CL in days (Analytics plan only).')
param tableRetentionInDays int = 90

@description('Total retention of EmailEvents_CL in days; 0 = none beyond the interactive period.')
param tableTotalRetentionInDays int = 0

@description('Interactive retention of MessageTraceHealth_CL in days.')
param healthTableRetentionInDays int = 90

@description('Interactive retention of MessageTraceDetail_CL in days.')
param detailTableRetentionInDays int = 90

@description('Principal (object) id of the function\'s managed identity: sends rows through the DCR.')
param publisherPrincipalId string

@description('Principal (object) id that may query EmailEvents_CL only (workspace verification); empty = none.')
param readerPrincipalId string = ''

@description('Entra tenant of the function\'s managed identity (the tenant of the deployment\'s subscription).')
param identityTenantId string

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

// Evaluated when this deployment starts, before its modules: a workspace of another tenant is refused.
var publisher = subscription().tenantId == identityTenantId ? publisherPrincipalId : fail('Workspace ${workspaceName} (subscription ${subscription().subscriptionId}) is in Entra tenant ${subscription().tenantId}, the function\'s managed identity in ${identityTenantId}: a managed identity cannot be granted roles in another tenant (nor through Azure Lighthouse: Monitoring Metrics Publisher has DataActions). Omit workspaceResourceId for that tenant (shared table) or use a workspace in a subscription of ${identityTenantId}; see infra/README.md "Many tenants".')

module table 'table.bicep' = {
  name: '${deploymentPrefix}-table'
  params: {
    workspaceName: workspace.name
    schema: schema
    plan: tablePlan
    retentionInDays: tableRetentionInDays
    totalRetentionInDays: tableTotalRetentionInDays
    // A customer workspace (often Sentinel's) usually routes Audit to itself already.
    enableQueryAudit: false
    readerPrincipalId: readerPrincipalId
  }
}

module healthTable 'table.bicep' = {
  name: '${deploymentPrefix}-healthtable'
  params: {
    workspaceName: workspace.name
    schema: healthSchema
    plan: 'Analytics'
    retentionInDays: healthTableRetentionInDays
    enableQueryAudit: false
    readerPrincipalId: ''
  }
}

// After the mail table's instance: with workspace verification both grant the same workspace query role.
module detailTable 'table.bicep' = {
  name: '${deploymentPrefix}-detailtable'
  dependsOn: [
    table
  ]
  params: {
    workspaceName: workspace.name
    schema: detailSchema
    plan: 'Analytics'
    retentionInDays: detailTableRetentionInDays
    enableQueryAudit: false
    readerPrincipalId: readerPrincipalId
  }
}

module dcr 'dcr.bicep' = {
  name: '${deploymentPrefix}-dcr'
  dependsOn: [
    table
    healthTable
    detailTable
  ]
  params: {
    name: dcrName
    location: workspace.location
    tags: tags
    workspaceResourceId: workspace.id
    schema: schema
    healthSchema: healthSchema
    detailSchema: detailSchema
    publisherPrincipalId: publisher
  }
}

output workspaceResourceId string = workspace.id
output workspaceId string = workspace.properties.customerId
output location string = workspace.location
output dcrId string = dcr.outputs.id
output ingestionEndpoint string = dcr.outputs.logsIngestionEndpoint
output dcrImmutableId string = dcr.outputs.immutableId
