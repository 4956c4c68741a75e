// The Sentinel data connector card of the feed: a Codeless Connector Framework definition
// (infra/sentinel/Data Connectors/MessageTraceConnector.json) that makes EmailEvents_CL
// show in Sentinel's Data connectors page with its status, last data received and a chart.
// It connects nothing: the feed is the function app deployed by main.bicep, sending
// through the Logs Ingestion API. Deployed into the workspace's own resource group, like
// modules/sentinel-content.bicep; needs Microsoft Sentinel on the workspace.
//
// Facts relied on, with their source:
// * Resource type Microsoft.SecurityInsights/dataConnectorDefinitions, an extension
//   resource on the workspace, discriminator `kind`, the only kind 'Customizable'
//   (CustomizableConnectorDefinition); name pattern ^[a-z0-9A-Z-_]*$. Newest stable API
//   version 2025-09-01 (2025-10-01-preview is newer but preview). Properties:
//   connectorUiConfig (required), connectionsConfig (the templates a polling connector
//   creates: none here). Azure/bicep-types-az
//   generated/securityinsights/microsoft.securityinsights/2025-09-01/types.md
//   (https://github.com/Azure/bicep-types-az/blob/main/generated/securityinsights/microsoft.securityinsights/2025-09-01/types.md),
//   CustomizableConnectorDefinitionProperties, CustomizableConnectorUiConfig,
//   ConnectivityCriterion, ConnectorDataType, GraphQuery, ConnectorDefinitionsPermissions,
//   InstructionStep. tests/infra/test_sentinel_connector.py lists every property name.
// * `sampleQueries` is not in that type, but Learn's "Data connector definitions reference
//   for the Codeless Connector Framework" (data-connector-ui-definitions-reference) lists
//   it as a required connectorUiConfig field, and Azure-Sentinel's definitions ship it
//   (Solutions/GitHub/Data Connectors/GitHubAuditLogs_CCF/GitHubAuditLogs_ConnectorDefinition.json):
//   the UI config is passed through any() so Bicep does not flag it.
// * connectivityCriteria type IsConnectedQuery: "the connector is considered connected
//   when the provided query returns data", for connectors other than API polling (same
//   Learn page; its example ends `| project IsConnected = LastLogReceived > ago(7d)`).
//   dataTypes[].lastDataReceivedQuery: "returns one row, and indicates the last time data
//   was received, or no data if there are no results", documented form
//   `<table> | summarize Time = max(TimeGenerated) | where isnotempty(Time)`.
//   graphQueries[].baseQuery: "wrapped by Sentinel UI infra with a KQL query that
//   measures the volume over time" (bicep-types-az GraphQuery), so it is the table alone.
// * File shape: Azure-Sentinel keeps a Customizable definition as the resource itself
//   (name, apiVersion, type, kind, properties.connectorUiConfig), as in the GitHub file
//   above; the resource name is the file's `name`, which equals connectorUiConfig.id,
//   the connectorId the analytic rules and hunting queries name in requiredDataConnectors.
//
// Every KQL text of the definition is checked by tests/unit/test_kql.py (tests/kql.py,
// "Data connector definitions"). No user-defined `func`: checkov's pycep-parser 0.5.1
// cannot parse one (see modules/sentinel-content.bicep).

@description('Name of the (new or existing) workspace in this resource group. Microsoft Sentinel must be on it.')
param workspaceName string

var definition = loadJsonContent('../sentinel/Data Connectors/MessageTraceConnector.json')

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource connectorDefinition 'Microsoft.SecurityInsights/dataConnectorDefinitions@2025-09-01' = {
  name: definition.name
  scope: workspace
  kind: 'Customizable'
  properties: {
    connectorUiConfig: any(definition.properties.connectorUiConfig)
  }
}

output id string = connectorDefinition.id
output connectorId string = definition.properties.connectorUiConfig.id
