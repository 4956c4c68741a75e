// EmailEvents_CL, generated from the connector's schema file (passed in as `schema`,
// loaded with loadJsonContent in main.bicep), plus the workspace query audit and the
// read access workspace verification needs: Microsoft's table-level read access
// (learn "Manage table-level read access"): a custom role at the workspace with only
// workspaces/read + workspaces/query/read (run a query, read no table) and Reader on
// this one table. Table-level Reader alone is refused: a query needs query/read on the
// workspace.
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

@description('Principal (object) id that may query this table only (custom query role on the workspace + Reader on the table); empty = none.')
param readerPrincipalId string = ''

// Reader (built-in), scoped to the table: read access to this table's data only.
var readerRoleId = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'
var grantRead = !empty(readerPrincipalId)

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

// Run a query in the workspace without reading any table (the workspace half of
// table-level read access). One definition per workspace, shared by every deployment
// that targets it; assignable in this resource group only.
resource workspaceQueryRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (grantRead) {
  name: guid(workspace.id, 'message-trace-connector-workspace-query')
  properties: {
    roleName: 'Log Analytics query without table data (${workspaceName}, ${uniqueString(workspace.id)})'
    description: 'Read the workspace and run queries in it, no table data: pair with Reader on a table (table-level read access).'
    type: 'CustomRole'
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: [
          'Microsoft.OperationalInsights/workspaces/read'
          'Microsoft.OperationalInsights/workspaces/query/read'
        ]
        notActions: [
          'Microsoft.OperationalInsights/workspaces/sharedKeys/read'
        ]
        dataActions: []
        notDataActions: []
      }
    ]
  }
}

resource workspaceQuery 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantRead) {
  name: guid(workspace.id, readerPrincipalId, workspaceQueryRole.id)
  scope: workspace
  properties: {
    principalId: readerPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: workspaceQueryRole.id
    description: 'Message trace connector: run workspace verification queries (no table data by itself)'
  }
}

resource tableReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantRead) {
  name: guid(table.id, readerPrincipalId, readerRoleId)
  scope: table
  properties: {
    principalId: readerPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', readerRoleId)
    description: 'Message trace connector: workspace queries read ${schema.table} only'
  }
}

output id string = table.id
output name string = table.name
