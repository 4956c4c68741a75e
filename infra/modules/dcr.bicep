// The Data Collection Rule (kind Direct: it has its own Logs Ingestion endpoint, no DCE),
// with its input streams generated from the same schemas as the tables (the mail rows, and
// one health summary row per run), and the only role the connector needs to send rows:
// Monitoring Metrics Publisher on this DCR (it covers every stream of the DCR).

@description('DCR name.')
param name string

@description('Region: must be the workspace region.')
param location string

@description('Tags.')
param tags object = {}

@description('Destination workspace resource id.')
param workspaceResourceId string

@description('Parsed connector/data/EmailEvents_CL.json: { table, stream, columns: [{ name, type }] }.')
param schema object

@description('Parsed connector/data/MessageTraceHealth_CL.json: the health rows\' table and stream.')
param healthSchema object

@description('Parsed connector/data/MessageTraceDetail_CL.json: the detail rows\' table and stream (enrich).')
param detailSchema object

@description('Principal (object) id allowed to send rows through this DCR.')
param publisherPrincipalId string

// Monitoring Metrics Publisher
var monitoringMetricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'

var streamColumns = [for column in schema.columns: {
  name: column.name
  type: column.type
}]

var healthStreamColumns = [for column in healthSchema.columns: {
  name: column.name
  type: column.type
}]

var detailStreamColumns = [for column in detailSchema.columns: {
  name: column.name
  type: column.type
}]

resource dcr 'Microsoft.Insights/dataCollectionRules@2023-03-11' = {
  name: name
  location: location
  tags: tags
  kind: 'Direct'
  properties: {
    description: 'Message trace connector -> ${schema.table}'
    streamDeclarations: {
      '${schema.stream}': {
        columns: streamColumns
      }
      '${healthSchema.stream}': {
        columns: healthStreamColumns
      }
      '${detailSchema.stream}': {
        columns: detailStreamColumns
      }
    }
    destinations: {
      logAnalytics: [
        {
          name: 'workspace'
          workspaceResourceId: workspaceResourceId
        }
      ]
    }
    dataFlows: [
      {
        streams: [
          schema.stream
        ]
        destinations: [
          'workspace'
        ]
        transformKql: 'source'
        outputStream: 'Custom-${schema.table}'
      }
      {
        streams: [
          healthSchema.stream
        ]
        destinations: [
          'workspace'
        ]
        transformKql: 'source'
        outputStream: 'Custom-${healthSchema.table}'
      }
      {
        streams: [
          detailSchema.stream
        ]
        destinations: [
          'workspace'
        ]
        transformKql: 'source'
        outputStream: 'Custom-${detailSchema.table}'
      }
    ]
  }
}

resource publisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dcr.id, publisherPrincipalId, monitoringMetricsPublisherRoleId)
  scope: dcr
  properties: {
    principalId: publisherPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisherRoleId)
    description: 'Message trace connector: send rows through this DCR'
  }
}

output id string = dcr.id
output logsIngestionEndpoint string = dcr.properties.endpoints.logsIngestion
output immutableId string = dcr.properties.immutableId
