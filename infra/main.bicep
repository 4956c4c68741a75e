// Message trace connector: the whole feed in one resource-group deployment.
//
//   az deployment group create -g <rg> -f infra/main.bicep -p infra/main.bicepparam
//   azd up                      (azure.yaml at the repository root; infra + code)
//
// Exchange Online message trace (Microsoft Graph) -> Flex Consumption function app
// -> Logs Ingestion API (Direct DCR) -> custom table EmailEvents_CL.
// Secretless by default: one user-assigned managed identity reaches Graph, the DCR and
// the storage account. Every name is derived from uniqueString(resourceGroup().id, ...)
// and every role assignment name from guid(...), so a redeploy with the same
// parameters changes nothing. See infra/README.md.

targetScope = 'resourceGroup'

// ----------------------------------------------------------------------------- parameters

@description('Short name put into every resource name: 2-12 lower-case letters or digits.')
@minLength(2)
@maxLength(12)
param baseName string

@description('Region of the function app, storage, identity and Application Insights. A new workspace is created here too; the DCR and the alert always follow the workspace.')
param location string = resourceGroup().location

@description('Tags added to every resource.')
param tags object = {}

@description('Resource id of an existing Log Analytics workspace (for example the Sentinel one), possibly in another resource group or subscription. Empty: create a new workspace.')
param existingWorkspaceResourceId string = ''

@description('Retention of a NEW workspace (days). Ignored for an existing workspace.')
@minValue(30)
@maxValue(730)
param workspaceRetentionInDays int = 90

@description('Plan of the EmailEvents_CL table. Analytics: full KQL, alerts, Sentinel analytics rules. Basic: cheaper ingestion, 30-day interactive retention, single-table queries, no alerts (the no-data alert is then not deployed).')
@allowed([
  'Analytics'
  'Basic'
])
param tablePlan string = 'Analytics'

@description('Interactive retention of EmailEvents_CL in days (Analytics plan only; Basic tables always keep 30 days interactive).')
@minValue(4)
@maxValue(730)
param tableRetentionInDays int = 90

@description('Total retention of EmailEvents_CL in days, including long-term retention. 0: no long-term retention beyond the interactive period.')
@minValue(0)
@maxValue(4383)
param tableTotalRetentionInDays int = 0

@description('Interactive retention of MessageTraceHealth_CL (one summary row per connector run) in days; the table is always on the Analytics plan.')
@minValue(4)
@maxValue(730)
param healthTableRetentionInDays int = 90

@description('Interactive retention of MessageTraceDetail_CL (one row per event of a message enriched by `python -m connector enrich`) in days; the table is always on the Analytics plan.')
@minValue(4)
@maxValue(730)
param detailTableRetentionInDays int = 90

@description('Send the workspace Audit category (table LAQueryLogs) to the workspace itself, so every query of EmailEvents_CL is logged. Default: on for a new workspace, off for an existing one (a Sentinel workspace usually routes Audit to itself already, and Azure refuses a second setting with the same category and destination: "Data sink ... is already used").')
param enableQueryAudit bool = empty(existingWorkspaceResourceId)

@description('Onboard Microsoft Sentinel on the workspace (Microsoft.SecurityInsights/onboardingStates "default"), so analytics rules, hunting queries and workbooks for EmailEvents_CL have somewhere to live. Default: on for a new workspace, off for an existing one (a Sentinel workspace already has it). Sentinel is billed per GB on top of Log Analytics (infra/README.md "Costs that matter").')
param enableSentinel bool = empty(existingWorkspaceResourceId)

@description('Deploy the Sentinel content of infra/sentinel/ (hunting queries, workbook, look-alike watchlist, and the analytic rules when tablePlan is Analytics). It needs Microsoft Sentinel on the workspace: default on when this deployment onboards it (enableSentinel). For an existing Sentinel workspace set enableSentinel=true (onboarding an onboarded workspace changes nothing) or this parameter.')
param deploySentinelContent bool = enableSentinel

@description('Deploy the parsers of infra/sentinel/Parsers (saved functions MessageTrace, vimEmailEventMicrosoftMessageTrace, ASimEmailEventMicrosoftMessageTrace). They need no Sentinel; the analytic rules and hunting queries call them, so Sentinel content deploys them regardless.')
param deployParsers bool = true

@description('Resource id of an existing workspace for the function\'s Application Insights telemetry. Empty: create a small workspace of its own, so telemetry is not billed at Sentinel rates in the connector\'s workspace.')
param appInsightsWorkspaceResourceId string = ''

@description('Retention of a NEW Application Insights workspace (days).')
@minValue(30)
@maxValue(730)
param appInsightsRetentionInDays int = 30

@description('Entra tenant of the Exchange Online organisation (GUID or verified domain). Default: the tenant of this deployment.')
param tenantId string = tenant().tenantId

@description('Comma-separated domains of the organisation for the Direction column (LOCAL_DOMAINS), added to the verified domains the connector reads from Graph (/domains, permission Domain.Read.All, granted with ExchangeMessageTrace.Read.All), e.g. an on-premises domain Graph does not list; Unicode (bücher.example) or punycode both work. Empty: the discovered domains alone (a run with no domain from either source stops with a setting error).')
param localDomains string = ''

@description('NCRONTAB schedule of the timer (six fields, UTC).')
param timerSchedule string = '0 */5 * * * *'

@description('Blob container holding the checkpoint, the dead letters and the run lock.')
@minLength(3)
@maxLength(63)
param checkpointContainerName string = 'message-trace-connector'

@description('Storage queue of backfills run on Azure (`backfill --on-azure`); the host moves messages that fail 5 times to <name>-poison. 3-56 lower-case letters, digits and hyphens.')
@minLength(3)
@maxLength(56)
param backfillQueueName string = 'backfill-slices'

@description('How the connector gets Graph tokens. managed_identity (default, no secret): grant ExchangeMessageTrace.Read.All to the managed identity (grantGraphPermission or infra/scripts); reads only the home tenant, so it is refused with tenants. client_secret: an app registration (clientId) whose secret lives in Key Vault. federated_identity (no secret, for tenants): a multi-tenant app registration (clientId) with the managed identity as its federated credential (federatedAppUniqueName, or infra/README.md "Many tenants"), admin-consented in every customer tenant.')
@allowed([
  'managed_identity'
  'client_secret'
  'federated_identity'
])
param graphAuthMode string = 'managed_identity'

@description('Application (client) id of the app registration (CLIENT_ID). Used when graphAuthMode is client_secret or federated_identity (then required).')
param clientId string = ''

@description('graphAuthMode federated_identity only: uniqueName of the app registration clientId as the Microsoft Graph Bicep extension knows it (an app created with a uniqueName, e.g. by Bicep). Set: this deployment adds the managed identity as a federated identity credential of that app (the deploying user needs Application.ReadWrite.All or ownership of the app). Empty: add the credential yourself (infra/README.md "Many tenants").')
param federatedAppUniqueName string = ''

@description('Customer tenants read by this one deployment (app setting TENANTS; empty = single tenant, as before). Each item: { name (1-24 of a-z 0-9 -, unique), tenantId (customer Entra tenant GUID, unique), workspaceResourceId? (the customer\'s own workspace, any subscription of this deployment\'s Entra tenant: both tables, a DCR and the roles are deployed there; omitted: the deployment\'s table, rows told apart by SourceTenantId), localDomains? (array of domains), graphQuotaRequests? (int), graphQuotaHeadroom? (int), enabled? (bool, default true), useDeploymentContainer? (bool: the one tenant this deployment read before tenants was set keeps its checkpoint container, so its feed continues without a re-read) }. Other keys are refused. Needs graphAuthMode client_secret or federated_identity.')
param tenants array = []

@description('Storage queue of the per-tenant runs (TENANT_QUEUE): each timer tick queues one message per enabled tenant; the host moves messages that fail 5 times to <name>-poison. 3-56 lower-case letters, digits and hyphens.')
@minLength(3)
@maxLength(56)
param tenantQueueName string = 'tenant-runs'

@description('Secret of that app registration, written to Key Vault as secret "graph-client-secret". Pass it on the command line, never in a file; leave empty to set the secret in the vault yourself.')
@secure()
param clientSecret string = ''

@description('Create a Key Vault (RBAC, purge protection) readable by the function identity. Always created when graphAuthMode is client_secret or subjectMode is hash.')
param useKeyVault bool = false

@description('SUBJECT_MODE: what happens to each mail subject before it leaves the function (rows and dead letters). keep: as sent. hash: HMAC-SHA256 under a key in Key Vault (equal subjects still group; README "Privacy"). drop: an empty Subject column.')
@allowed([
  'keep'
  'hash'
  'drop'
])
param subjectMode string = 'keep'

@description('subjectMode hash only: the HMAC key (base64 of at least 32 random bytes: openssl rand -base64 32), written to Key Vault as secret "subject-hash-key". Pass it on the command line once, never in a file; leave empty to set the secret in the vault yourself (infra/README.md "Subject hashing key"). An empty value on a later deployment leaves the secret as it is.')
@secure()
param subjectHashKey string = ''

@description('Let the connector verify, after a crash, which rows of an unconfirmed batch arrived (WORKSPACE_ID), instead of resending the batch (without it, a crash between an accepted upload and the checkpoint save stores up to one group of batches, at most about 5,000 rows, twice). Grants Reader on the EmailEvents_CL table plus a custom role with only workspaces/read and workspaces/query/read on the workspace (Microsoft\'s table-level read access); creating that custom role needs Owner or User Access Administrator on the workspace\'s resource group.')
param enableWorkspaceVerification bool = true

@description('Grant ExchangeMessageTrace.Read.All to the managed identity and create the service principal of the Exchange message trace app, with the Microsoft Graph Bicep extension. The deploying user needs AppRoleAssignment.ReadWrite.All and Application.ReadWrite.All (e.g. Privileged Role Administrator). Otherwise run infra/scripts/grant-graph-permission.sh.')
param grantGraphPermission bool = false

@description('The alert fires when EmailEvents_CL received no row for this many minutes. Raise it for a tenant with quiet hours.')
@allowed([
  15
  30
  45
  60
  120
  180
  240
  360
  720
  1440
])
param noDataAlertMinutes int = 60

@description('E-mail address that gets the no-data alert. Empty: the alert fires without notifying anyone (visible in Azure Monitor).')
param alertEmail string = ''

@description('Replication of the storage account (checkpoint + deployment package). Standard_ZRS needs a region with availability zones.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
])
param storageSkuName string = 'Standard_LRS'

@description('Maximum instances of the Flex Consumption app (the timer runs on one instance at a time anyway). Flex accepts 40-1000 (values below 40 only in preview regions).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory of one Flex Consumption instance (MB).')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Further connector settings (names from the settings table of the main README), e.g. { INITIAL_LOOKBACK_HOURS: \'72\' }. They are kept on every redeploy; the settings this template wires cannot be overridden here.')
param extraConnectorSettings object = {}

// ----------------------------------------------------------------------------- names

// The table's columns, its name and the DCR stream all come from the connector's own schema file.
var schema = loadJsonContent('../connector/data/EmailEvents_CL.json')
// The health table (one summary row per run) and its stream, from its own schema file.
var healthSchema = loadJsonContent('../connector/data/MessageTraceHealth_CL.json')
// The detail table (one row per event of an enriched message's journey) and its stream.
var detailSchema = loadJsonContent('../connector/data/MessageTraceDetail_CL.json')

var token = toLower(uniqueString(resourceGroup().id, baseName))
var compactBase = toLower(replace(baseName, '-', ''))
var names = {
  identity: 'id-${baseName}-${token}'
  workspace: 'log-${baseName}-${token}'
  appInsights: 'appi-${baseName}-${token}'
  appInsightsWorkspace: 'log-${baseName}-${token}-telemetry'
  storage: take('st${compactBase}${token}', 24)
  deploymentContainer: 'app-package-${take(token, 12)}'
  plan: 'plan-${baseName}-${token}'
  functionApp: 'func-${baseName}-${take(token, 8)}'
  dcr: 'dcr-${baseName}-${token}'
  keyVault: 'kv-${take(compactBase, 8)}-${take(token, 10)}'
  alert: 'alert-${baseName}-${token}-no-data'
  actionGroup: 'ag-${baseName}-${token}'
}

var useExistingWorkspace = !empty(existingWorkspaceResourceId)
var workspaceSubscriptionId = useExistingWorkspace ? split(existingWorkspaceResourceId, '/')[2] : subscription().subscriptionId
var workspaceResourceGroupName = useExistingWorkspace ? split(existingWorkspaceResourceId, '/')[4] : resourceGroup().name
var workspaceName = useExistingWorkspace ? last(split(existingWorkspaceResourceId, '/')) : names.workspace
var isClientSecret = graphAuthMode == 'client_secret'
var isFederated = graphAuthMode == 'federated_identity'
var usesClientId = isClientSecret || isFederated
var isSubjectHash = subjectMode == 'hash'
var deployKeyVault = useKeyVault || isClientSecret || isSubjectHash
var allTags = union(tags, {
  application: 'message-trace-connector'
})

// Many tenants (infra/README.md "Many tenants"). The managed identity lives in the Entra tenant of
// this subscription: the issuer of its federated credential, and the only tenant whose resources it
// can be granted roles on.
var hasTenants = !empty(tenants)
var identityTenantId = subscription().tenantId
var mainWorkspaceResourceId = useExistingWorkspace ? existingWorkspaceResourceId : resourceId('Microsoft.OperationalInsights/workspaces', names.workspace)
// Each tenant's own workspace, lower-case ('' = it shares the deployment's table and DCR; the same
// expression as tenantWorkspaceKeys in modules/tenant-settings.bicep), and each distinct one once
// (tenants sharing a customer workspace share its tables and DCR).
var tenantWorkspaceKeys = [for t in tenants: contains(t, 'workspaceResourceId') ? toLower(t.workspaceResourceId) : '']
var tenantWorkspaceList = filter(union(tenantWorkspaceKeys, []), key => !empty(key))

// ----------------------------------------------------------------------------- resources

module identity 'modules/identity.bicep' = {
  name: 'mtc-${baseName}-identity'
  params: {
    name: names.identity
    location: location
    tags: allTags
  }
}

module workspace 'modules/workspace.bicep' = {
  name: 'mtc-${baseName}-workspace'
  params: {
    name: workspaceName
    location: location
    tags: allTags
    existingWorkspaceResourceId: existingWorkspaceResourceId
    retentionInDays: workspaceRetentionInDays
  }
}

// The table, the query audit and the table-scoped reader role live where the workspace lives.
module table 'modules/table.bicep' = {
  name: 'mtc-${baseName}-table'
  scope: resourceGroup(workspaceSubscriptionId, workspaceResourceGroupName)
  dependsOn: [
    workspace
  ]
  params: {
    workspaceName: workspaceName
    schema: schema
    plan: tablePlan
    retentionInDays: tableRetentionInDays
    totalRetentionInDays: tableTotalRetentionInDays
    enableQueryAudit: enableQueryAudit
    readerPrincipalId: enableWorkspaceVerification ? identity.outputs.principalId : ''
  }
}

// The health table: a second instance of the table module, always on the Analytics plan (the
// health rule and the workbook query it; a row per run is tiny), short retention, no audit or
// reader role of its own (the mail table's instance does those for the workspace).
module healthTable 'modules/table.bicep' = {
  name: 'mtc-${baseName}-healthtable'
  scope: resourceGroup(workspaceSubscriptionId, workspaceResourceGroupName)
  dependsOn: [
    workspace
  ]
  params: {
    workspaceName: workspaceName
    schema: healthSchema
    plan: 'Analytics'
    retentionInDays: healthTableRetentionInDays
    enableQueryAudit: false
    readerPrincipalId: ''
  }
}

// The detail table: a third instance, always Analytics (the hunting query and the workbook's
// drill-down join it). With workspace verification the identity reads it too (enrich skips the
// pairs it holds): after the mail table's instance, whose workspace query role it shares.
module detailTable 'modules/table.bicep' = {
  name: 'mtc-${baseName}-detailtable'
  scope: resourceGroup(workspaceSubscriptionId, workspaceResourceGroupName)
  dependsOn: [
    workspace
    table
  ]
  params: {
    workspaceName: workspaceName
    schema: detailSchema
    plan: 'Analytics'
    retentionInDays: detailTableRetentionInDays
    enableQueryAudit: false
    readerPrincipalId: enableWorkspaceVerification ? identity.outputs.principalId : ''
  }
}

// Sentinel on the workspace (its own module: it lives where the workspace lives).
module sentinel 'modules/sentinel.bicep' = if (enableSentinel) {
  name: 'mtc-${baseName}-sentinel'
  scope: resourceGroup(workspaceSubscriptionId, workspaceResourceGroupName)
  dependsOn: [
    workspace
  ]
  params: {
    workspaceName: workspaceName
  }
}

// The analyst content of infra/sentinel/, where the workspace lives, after the table (and
// after Sentinel onboarding when this deployment does it). Analytic rules only on the
// Analytics plan: Sentinel cannot run a scheduled rule on a Basic table.
module sentinelContent 'modules/sentinel-content.bicep' = if (deployParsers || deploySentinelContent) {
  name: 'mtc-${baseName}-content'
  scope: resourceGroup(workspaceSubscriptionId, workspaceResourceGroupName)
  dependsOn: [
    table
    healthTable
    detailTable
    sentinel
  ]
  params: {
    workspaceName: workspaceName
    location: workspace.outputs.location
    tags: allTags
    deployParsers: deployParsers || deploySentinelContent
    deploySentinelItems: deploySentinelContent
    deployAnalyticRules: deploySentinelContent && tablePlan == 'Analytics'
  }
}

// The feed's card in Sentinel's Data connectors page (status, last data received, chart
// of EmailEvents_CL), where the workspace lives, with the rest of the Sentinel content:
// after the table its queries read and after Sentinel onboarding when this deployment
// does it. See infra/README.md "Data connector card".
module sentinelConnector 'modules/sentinel-connector.bicep' = if (deploySentinelContent) {
  name: 'mtc-${baseName}-connector'
  scope: resourceGroup(workspaceSubscriptionId, workspaceResourceGroupName)
  dependsOn: [
    table
    sentinel
  ]
  params: {
    workspaceName: workspaceName
  }
}

module dcr 'modules/dcr.bicep' = {
  name: 'mtc-${baseName}-dcr'
  dependsOn: [
    table
    healthTable
    detailTable
  ]
  params: {
    name: names.dcr
    location: workspace.outputs.location
    tags: allTags
    workspaceResourceId: workspace.outputs.id
    schema: schema
    healthSchema: healthSchema
    detailSchema: detailSchema
    publisherPrincipalId: identity.outputs.principalId
  }
}

module storage 'modules/storage.bicep' = {
  name: 'mtc-${baseName}-storage'
  params: {
    name: names.storage
    location: location
    tags: allTags
    containerNames: [
      checkpointContainerName
      names.deploymentContainer
    ]
    queueNames: [
      backfillQueueName
      '${backfillQueueName}-poison'
      tenantQueueName
      '${tenantQueueName}-poison'
    ]
    principalId: identity.outputs.principalId
    skuName: storageSkuName
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'mtc-${baseName}-monitoring'
  params: {
    name: names.appInsights
    workspaceName: names.appInsightsWorkspace
    location: location
    tags: allTags
    existingWorkspaceResourceId: appInsightsWorkspaceResourceId
    retentionInDays: appInsightsRetentionInDays
  }
}

module keyVault 'modules/keyvault.bicep' = if (deployKeyVault) {
  name: 'mtc-${baseName}-keyvault'
  params: {
    name: names.keyVault
    location: location
    tags: allTags
    clientSecret: clientSecret
    subjectHashKey: subjectHashKey
    principalId: identity.outputs.principalId
  }
}

// Refuses a tenants list (or graphAuthMode) a multi-tenant deployment cannot work with, with one
// readable message, before the customer workspaces, the Graph credential and the function app.
module tenantChecks 'modules/tenant-checks.bicep' = if (hasTenants || isFederated) {
  name: 'mtc-${baseName}-tenantchecks'
  params: {
    tenants: tenants
    graphAuthMode: graphAuthMode
    clientId: clientId
    mainWorkspaceResourceId: mainWorkspaceResourceId
  }
}

// Each distinct customer workspace of tenants: both tables and a DCR (table.bicep and dcr.bicep,
// the same schema files) and the identity's roles, deployed into that workspace's resource group.
module tenantWorkspaces 'modules/tenant-workspace.bicep' = [for key in tenantWorkspaceList: {
  name: 'mtc-${baseName}-${uniqueString(key)}-tenantws'
  scope: resourceGroup(split(key, '/')[2], split(key, '/')[4])
  dependsOn: [
    tenantChecks
  ]
  params: {
    workspaceName: last(split(key, '/'))
    dcrName: 'dcr-${baseName}-${uniqueString(resourceGroup().id, baseName, key)}'
    deploymentPrefix: 'mtc-${baseName}-${uniqueString(key)}'
    tags: allTags
    schema: schema
    healthSchema: healthSchema
    detailSchema: detailSchema
    tablePlan: tablePlan
    tableRetentionInDays: tableRetentionInDays
    tableTotalRetentionInDays: tableTotalRetentionInDays
    healthTableRetentionInDays: healthTableRetentionInDays
    detailTableRetentionInDays: detailTableRetentionInDays
    publisherPrincipalId: identity.outputs.principalId
    readerPrincipalId: enableWorkspaceVerification ? identity.outputs.principalId : ''
    identityTenantId: identityTenantId
  }
}]

// The TENANTS entries (the spec's camelCase keys), from tenants and the workspaces' outputs.
module tenantSettings 'modules/tenant-settings.bicep' = if (hasTenants) {
  name: 'mtc-${baseName}-tenants'
  dependsOn: [
    tenantChecks
  ]
  params: {
    tenants: tenants
    workspaceKeys: tenantWorkspaceList
    destinations: [for (key, i) in tenantWorkspaceList: {
      ingestionEndpoint: tenantWorkspaces[i].outputs.ingestionEndpoint
      dcrImmutableId: tenantWorkspaces[i].outputs.dcrImmutableId
      workspaceId: tenantWorkspaces[i].outputs.workspaceId
    }]
    includeWorkspaceId: enableWorkspaceVerification
  }
}

// Every setting the connector reads that this deployment decides (README "Settings").
var connectorSettings = union(
  extraConnectorSettings,
  {
    TENANT_ID: tenantId
    LOCAL_DOMAINS: localDomains
    GRAPH_AUTH_MODE: graphAuthMode
    AZURE_AUTH_MODE: 'managed_identity'
    MANAGED_IDENTITY_CLIENT_ID: identity.outputs.clientId
    INGESTION_ENDPOINT: dcr.outputs.logsIngestionEndpoint
    DCR_IMMUTABLE_ID: dcr.outputs.immutableId
    DCR_STREAM_NAME: schema.stream
    HEALTH_STREAM_NAME: healthSchema.stream
    DETAIL_STREAM_NAME: detailSchema.stream
    CHECKPOINT_STORE: 'blob'
    STORAGE_ACCOUNT_URL: storage.outputs.blobEndpoint
    CHECKPOINT_CONTAINER: checkpointContainerName
    BACKFILL_QUEUE: backfillQueueName
    TENANT_QUEUE: tenantQueueName
    TIMER_SCHEDULE: timerSchedule
    SUBJECT_MODE: subjectMode
  },
  enableWorkspaceVerification ? {
    WORKSPACE_ID: workspace.outputs.customerId
  } : {},
  usesClientId ? {
    CLIENT_ID: clientId
  } : {},
  isClientSecret ? {
    CLIENT_SECRET: keyVault.outputs.clientCredentialReference
  } : {},
  hasTenants ? {
    TENANTS: tenantSettings.outputs.json
  } : {},
  isSubjectHash ? {
    SUBJECT_HASH_KEY: keyVault.outputs.subjectHashKeyReference
  } : {}
)

module functionApp 'modules/functionapp.bicep' = {
  name: 'mtc-${baseName}-function'
  dependsOn: [
    storage
    tenantChecks
  ]
  params: {
    name: names.functionApp
    planName: names.plan
    location: location
    tags: union(allTags, {
      'azd-service-name': 'connector'
    })
    identityResourceId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: names.deploymentContainer
    appInsightsConnectionString: monitoring.outputs.connectionString
    connectorSettings: connectorSettings
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
  }
}

module noDataAlert 'modules/alert.bicep' = if (tablePlan == 'Analytics') {
  name: 'mtc-${baseName}-alert'
  dependsOn: [
    table
  ]
  params: {
    name: names.alert
    actionGroupName: names.actionGroup
    location: workspace.outputs.location
    tags: allTags
    workspaceResourceId: workspace.outputs.id
    tableName: schema.table
    windowMinutes: noDataAlertMinutes
    alertEmail: alertEmail
  }
}

module graphPermission 'modules/graph-permission.bicep' = if (grantGraphPermission) {
  name: 'mtc-${baseName}-graph'
  params: {
    principalId: identity.outputs.principalId
  }
}

// federated_identity: the managed identity as a federated credential of the app clientId (Graph
// Bicep extension). Admin consent in each customer tenant stays a manual step (infra/README.md).
module graphFederation 'modules/graph-federation.bicep' = if (isFederated && !empty(federatedAppUniqueName)) {
  name: 'mtc-${baseName}-federation'
  dependsOn: [
    tenantChecks
  ]
  params: {
    appUniqueName: federatedAppUniqueName
    clientId: clientId
    principalId: identity.outputs.principalId
    identityTenantId: identityTenantId
    credentialName: 'mtc-${baseName}-${token}'
  }
}

// ----------------------------------------------------------------------------- outputs

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_FUNCTION_NAME string = functionApp.outputs.name
output FUNCTION_APP_NAME string = functionApp.outputs.name
output MANAGED_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output INGESTION_ENDPOINT string = dcr.outputs.logsIngestionEndpoint
output DCR_IMMUTABLE_ID string = dcr.outputs.immutableId
output DCR_STREAM_NAME string = schema.stream
output HEALTH_STREAM_NAME string = healthSchema.stream
output DETAIL_STREAM_NAME string = detailSchema.stream
output WORKSPACE_RESOURCE_ID string = workspace.outputs.id
output WORKSPACE_CUSTOMER_ID string = workspace.outputs.customerId
output TABLE_RESOURCE_ID string = table.outputs.id
output STORAGE_ACCOUNT_NAME string = storage.outputs.name
output STORAGE_ACCOUNT_URL string = storage.outputs.blobEndpoint
output BACKFILL_QUEUE string = backfillQueueName
output TENANT_QUEUE string = tenantQueueName
// The TENANTS entries (no secrets): per tenant its name and tenantId, and for a tenant with its own
// workspace the DCR's ingestion endpoint and immutable id and the workspace id.
output TENANTS array = hasTenants ? tenantSettings.outputs.entries : []
output FEDERATED_CREDENTIAL_ISSUER string = '${environment().authentication.loginEndpoint}${identityTenantId}/v2.0'
output APPINSIGHTS_WORKSPACE_RESOURCE_ID string = monitoring.outputs.workspaceResourceId
output KEY_VAULT_NAME string = deployKeyVault ? names.keyVault : ''
