// EmailEvents_CL, generated from the connector's schema file (passed in as `schema`,
// loaded with loadJsonContent in main.bicep), plus the workspace query audit and the
// table-scoped Log Analytics Reader role for workspace verification.
// Deployed into the workspace's own resource group.

@description('Name of the (new or existing) workspace in this resource group.')
param workspaceName string

@description('Parsed connector/data/EmailEvents_CL.json: { table, stream, columns: [{ name, type, description }] }.')
param schema object

@description('Table plan.')
@allowed([
  'Analytics'
  'Basic'
])
param plan string = 'Analytics'

@description('Interactive retention in days (Analytics plan only).')
param retentionInDays int = 90

@description('Total retention in days; 0 = no long-term retention beyond the interactive period.')
param totalRetentionInDays int = 0

@description('Send the workspace Audit category (LAQueryLogs) to the workspace itself.')
param enableQueryAudit bool = true

@description('Principal (object) id that gets Log Analytics Reader on this table only; empty = none.')
param readerPrincipalId string = ''

// Log Analytics Reader
var logAnalyticsReaderRoleId = '73c42c96-874c-492b-b04d-ab87d138a893'

// The schema file uses the DCR type vocabulary; tables spell datetime as dateTime.
var tableColumns = [for column in schema.columns: {
  name: column.name
  type: replace(column.type, 'datetime', 'dateTime')
  description: column.description
}]

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource table 'Microsoft.OperationalInsights/workspaces/tables@2022-10-01' = {
  parent: workspace
  name: schema.table
  properties: {
    plan: plan
    retentionInDays: plan == 'Analytics' ? retentionInDays : null
    totalRetentionInDays: totalRetentionInDays > 0 ? totalRetentionInDays : null
    schema: {
      name: schema.table
      description: schema.description
      columns: tableColumns
    }
  }
}

resource queryAudit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = if (enableQueryAudit) {
  name: 'query-audit-to-self'
  scope: workspace
  properties: {
    workspaceId: workspace.id
    logs: [
      {
        category: 'Audit'
        enabled: true
      }
    ]
  }
}

resource tableReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(readerPrincipalId)) {
  name: guid(table.id, readerPrincipalId, logAnalyticsReaderRoleId)
  scope: table
  properties: {
    principalId: readerPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', logAnalyticsReaderRoleId)
    description: 'Message trace connector: workspace verification reads EmailEvents_CL only'
  }
}

output id string = table.id
output name string = table.name
