// Application Insights for the function app, workspace-based (its data lands in the
// same Log Analytics workspace).

@description('Application Insights name.')
param name string

@description('Region.')
param location string

@description('Tags.')
param tags object = {}

@description('Workspace that stores the telemetry.')
param workspaceResourceId string

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
