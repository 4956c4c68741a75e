// Application Insights for the function app, workspace-based. Its telemetry goes to a
// workspace of its own (created here unless one is given), not to the connector's
// (Sentinel) workspace: telemetry there would be billed at Sentinel rates and mixed with
// security data. host.json keeps warnings and errors out of sampling.

@description('Application Insights name.')
param name string

@description('Name of the telemetry workspace created when existingWorkspaceResourceId is empty.')
param workspaceName string

@description('Region.')
param location string

@description('Tags.')
param tags object = {}

@description('Resource id of an existing workspace for the telemetry; empty creates workspaceName.')
param existingWorkspaceResourceId string = ''

@description('Retention of a new telemetry workspace (days).')
param retentionInDays int = 30

var useExisting = !empty(existingWorkspaceResourceId)

resource telemetryWorkspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = if (!useExisting) {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      enableLogAccessUsingOnlyResourcePermissions: true
    }
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

var workspaceResourceId = useExisting ? existingWorkspaceResourceId : telemetryWorkspace.id

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: name
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspaceResourceId
    IngestionMode: 'LogAnalytics'
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

output id string = appInsights.id
output name string = appInsights.name
output connectionString string = appInsights.properties.ConnectionString
output workspaceResourceId string = workspaceResourceId
