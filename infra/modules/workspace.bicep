// The Log Analytics workspace: a new one, or an existing one (e.g. Sentinel's) by resource id.

@description('Name of the new workspace (ignored when existingWorkspaceResourceId is set).')
param name string

@description('Region of a new workspace.')
param location string

@description('Tags of a new workspace.')
param tags object = {}

@description('Resource id of an existing workspace; empty creates a new one.')
param existingWorkspaceResourceId string = ''

@description('Retention of a new workspace (days).')
param retentionInDays int = 90

var useExisting = !empty(existingWorkspaceResourceId)
var idParts = split(existingWorkspaceResourceId, '/')

resource newWorkspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = if (!useExisting) {
  name: name
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

resource existingWorkspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = if (useExisting) {
  name: useExisting ? last(idParts) : name
  scope: resourceGroup(useExisting ? idParts[2] : subscription().subscriptionId, useExisting ? idParts[4] : resourceGroup().name)
}

output id string = useExisting ? existingWorkspace.id : newWorkspace.id
output name string = useExisting ? existingWorkspace.name : newWorkspace.name
output location string = useExisting ? existingWorkspace.location : newWorkspace.location
output customerId string = useExisting ? existingWorkspace.properties.customerId : newWorkspace.properties.customerId
