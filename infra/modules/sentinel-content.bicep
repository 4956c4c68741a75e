// The analyst content of infra/sentinel/ (Azure/Azure-Sentinel repository formats),
// deployed from those files: parsers (saved functions), analytic rules, hunting queries,
// the workbook and the look-alike domain watchlist. Deployed into the workspace's own
// resource group, like modules/sentinel.bicep.
//
// Bicep cannot list a directory: every content file is loaded here by name
// (tests/infra/test_sentinel_content.py checks that every file under infra/sentinel/ is
// loaded and every loaded path exists). The YAML fields are mapped to the API's property
// names below; the same test checks that every field the files use is read here or is
// metadata-only. The metadata-only fields (reasons in CONTENT_METADATA_ONLY there):
//   rule metadata: requiredDataConnectors, status, version, kind
//   hunting metadata: requiredDataConnectors, entityMappings, version, kind, description-detailed
//   parser metadata: Function.Version, Function.LastUpdated, FunctionName, Description
//   asim metadata: Parser.Version, Parser.LastUpdated, Product, Normalization, References, Description
// A rule's id, a hunting query's id and MessageTrace's id become the resource names, so a
// redeploy updates each in place; the ASIM parsers are named by ParserName, as in
// Azure-Sentinel's ARM templates. Order: MessageTrace, then vim (calls it), then ASim
// (calls vim); rules and hunting queries after the parsers; the watchlist before the rule
// that reads it.
//
// API versions, the newest stable ones in Azure/bicep-types-az (generated/...):
//   Microsoft.SecurityInsights/alertRules, watchlists      2025-09-01 (securityinsights)
//   Microsoft.OperationalInsights/workspaces/savedSearches 2026-03-01 (operationalinsights)
//   Microsoft.Insights/workbooks                           2023-06-01 (applicationinsights)
// alertRules 2025-09-01 has `techniques` only (T####); `subTechniques` exists in the
// preview versions alone, so a sub-technique (T1566.002) is deployed as its parent.

@description('Name of the (new or existing) workspace in this resource group.')
param workspaceName string

@description('Region of the workspace (the workbook lives there).')
param location string

@description('Tags of the workbook.')
param tags object = {}

@description('Deploy the parsers (saved functions MessageTrace, vimEmailEventMicrosoftMessageTrace, ASimEmailEventMicrosoftMessageTrace). They work in any workspace, Sentinel or not.')
param deployParsers bool = true

@description('Deploy the Sentinel content that needs Microsoft Sentinel on the workspace: hunting queries, workbook, watchlist (when its CSV has rows).')
param deploySentinelItems bool = true

@description('Deploy the scheduled analytic rules. Needs Sentinel and the Analytics plan on EmailEvents_CL (rules cannot query a Basic table), and the parsers.')
param deployAnalyticRules bool = true

@description('Display name of the workbook.')
param workbookDisplayName string = 'Message trace (EmailEvents_CL)'

// ----------------------------------------------------------------------------- content files

var messageTraceParser = loadYamlContent('../sentinel/Parsers/MessageTrace.yaml')
var vimParser = loadYamlContent('../sentinel/Parsers/vimEmailEventMicrosoftMessageTrace.yaml')
var asimParser = loadYamlContent('../sentinel/Parsers/ASimEmailEventMicrosoftMessageTrace.yaml')

var analyticRules = [
  any(loadYamlContent('../sentinel/Analytic Rules/OutboundVolumeAboveBaseline.yaml'))
  any(loadYamlContent('../sentinel/Analytic Rules/LargeOutboundToExternal.yaml'))
  any(loadYamlContent('../sentinel/Analytic Rules/ExternalSenderCampaign.yaml'))
  any(loadYamlContent('../sentinel/Analytic Rules/InboundFromLookalikeDomain.yaml'))
  any(loadYamlContent('../sentinel/Analytic Rules/DeliveryFailureSpike.yaml'))
  any(loadYamlContent('../sentinel/Analytic Rules/NewSenderDomainToManyUsers.yaml'))
  any(loadYamlContent('../sentinel/Analytic Rules/ConnectorHealth.yaml'))
]

var huntingQueries = [
  any(loadYamlContent('../sentinel/Hunting Queries/MessageIdPivot.yaml'))
  any(loadYamlContent('../sentinel/Hunting Queries/UserOutboundMail.yaml'))
  any(loadYamlContent('../sentinel/Hunting Queries/MailFlowByDirectionAndStatus.yaml'))
  any(loadYamlContent('../sentinel/Hunting Queries/TopTalkers.yaml'))
  any(loadYamlContent('../sentinel/Hunting Queries/LargestMessages.yaml'))
  any(loadYamlContent('../sentinel/Hunting Queries/FirstSeenExternalSenderDomains.yaml'))
  any(loadYamlContent('../sentinel/Hunting Queries/BounceStorms.yaml'))
  any(loadYamlContent('../sentinel/Hunting Queries/WhoReadMessageTrace.yaml'))
  any(loadYamlContent('../sentinel/Hunting Queries/MessageJourney.yaml'))
]

var workbookData = loadJsonContent('../sentinel/Workbooks/MessageTrace.json')

var lookalikeCsv = loadTextContent('../sentinel/Watchlists/LookalikeDomains.csv')

// ----------------------------------------------------------------------------- mappings

// Azure-Sentinel's triggerOperator -> the API's.
var triggerOperators = {
  gt: 'GreaterThan'
  lt: 'LessThan'
  eq: 'Equal'
  ne: 'NotEqual'
}

// Durations: Azure-Sentinel writes 30m, 1h, 14d; the API takes ISO 8601 (PT30M, PT1H,
// P14D). A value already in ISO 8601 (starts with P) is kept. No user-defined function:
// checkov's pycep-parser 0.5.1 cannot parse `func`.
var ruleLookbacks = [for rule in analyticRules: rule.?incidentConfiguration.?groupingConfiguration.?lookbackDuration ?? 'PT5H']
var ruleDurations = [for (rule, i) in analyticRules: {
  queryFrequency: startsWith(rule.queryFrequency, 'P') ? rule.queryFrequency : concat(endsWith(rule.queryFrequency, 'd') ? 'P' : 'PT', toUpper(rule.queryFrequency))
  queryPeriod: startsWith(rule.queryPeriod, 'P') ? rule.queryPeriod : concat(endsWith(rule.queryPeriod, 'd') ? 'P' : 'PT', toUpper(rule.queryPeriod))
  lookbackDuration: startsWith(ruleLookbacks[i], 'P') ? ruleLookbacks[i] : concat(endsWith(ruleLookbacks[i], 'd') ? 'P' : 'PT', toUpper(ruleLookbacks[i]))
}]

// Parser parameters -> functionParameters, as Azure-Sentinel's ASIM tooling writes them:
// 'name:type=default, ...', a string default in single quotes (eventresult:string='*').
var messageTraceParams = [for p in messageTraceParser.FunctionParams: p.Type == 'string' ? '${p.Name}:${p.Type}=\'${p.Default}\'' : '${p.Name}:${p.Type}=${p.Default}']
var vimParams = [for p in vimParser.ParserParams: p.Type == 'string' ? '${p.Name}:${p.Type}=\'${p.Default}\'' : '${p.Name}:${p.Type}=${p.Default}']
var asimParams = [for p in asimParser.ParserParams: p.Type == 'string' ? '${p.Name}:${p.Type}=\'${p.Default}\'' : '${p.Name}:${p.Type}=${p.Default}']

// The watchlist is deployed only when the CSV has a data row below its header (an empty
// watchlist is refused, and the rule reading it would find nothing anyway).
var lookalikeRows = length(filter(split(lookalikeCsv, '\n'), line => !empty(trim(line)))) - 1
var deployWatchlist = deploySentinelItems && lookalikeRows > 0

// ----------------------------------------------------------------------------- resources

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

// Parsers, in call order: ASim calls vim, vim calls MessageTrace.
resource messageTraceFunction 'Microsoft.OperationalInsights/workspaces/savedSearches@2026-03-01' = if (deployParsers) {
  parent: workspace
  name: messageTraceParser.id
  properties: {
    category: messageTraceParser.Category
    displayName: messageTraceParser.Function.Title
    functionAlias: messageTraceParser.FunctionAlias
    functionParameters: join(messageTraceParams, ', ')
    query: messageTraceParser.FunctionQuery
    version: 2
  }
}

resource vimFunction 'Microsoft.OperationalInsights/workspaces/savedSearches@2026-03-01' = if (deployParsers) {
  parent: workspace
  name: vimParser.ParserName
  dependsOn: [
    messageTraceFunction
  ]
  properties: {
    category: 'ASIM'
    displayName: vimParser.Parser.Title
    functionAlias: vimParser.ParserName
    functionParameters: join(vimParams, ', ')
    query: vimParser.ParserQuery
    version: 2
  }
}

resource asimFunction 'Microsoft.OperationalInsights/workspaces/savedSearches@2026-03-01' = if (deployParsers) {
  parent: workspace
  name: asimParser.ParserName
  dependsOn: [
    vimFunction
  ]
  properties: {
    category: 'ASIM'
    displayName: asimParser.Parser.Title
    functionAlias: asimParser.ParserName
    functionParameters: join(asimParams, ', ')
    query: asimParser.ParserQuery
    version: 2
  }
}

resource lookalikeWatchlist 'Microsoft.SecurityInsights/watchlists@2025-09-01' = if (deployWatchlist) {
  name: 'LookalikeDomains'
  scope: workspace
  properties: {
    displayName: 'LookalikeDomains'
    watchlistAlias: 'LookalikeDomains'
    description: 'Look-alike domains of the accepted domains (python -m connector lookalikes); read by the rule InboundFromLookalikeDomain.'
    provider: 'message-trace-connector'
    source: 'LookalikeDomains.csv'
    sourceType: 'Local'
    contentType: 'text/csv'
    numberOfLinesToSkip: 0
    itemsSearchKey: 'LookalikeDomain'
    rawContent: lookalikeCsv
  }
}

// Scheduled rules. A rule reading a watchlist (_GetWatchlist) is deployed only with it:
// Sentinel validates a rule's query at creation.
// (`if(` without a space in the loops: pycep-parser 0.7.1 cannot parse `: if (` in a loop.)
resource rules 'Microsoft.SecurityInsights/alertRules@2025-09-01' = [for (rule, i) in analyticRules: if(deployAnalyticRules && (deployWatchlist || !contains(rule.query, '_GetWatchlist'))) {
  name: rule.id
  scope: workspace
  kind: 'Scheduled'
  dependsOn: [
    messageTraceFunction
    vimFunction
    asimFunction
    lookalikeWatchlist
  ]
  properties: {
    displayName: rule.name
    description: rule.description
    severity: rule.severity
    enabled: rule.?enabled ?? true
    query: rule.query
    queryFrequency: ruleDurations[i].queryFrequency
    queryPeriod: ruleDurations[i].queryPeriod
    triggerOperator: triggerOperators[rule.triggerOperator]
    triggerThreshold: rule.triggerThreshold
    suppressionEnabled: rule.?suppressionEnabled ?? false
    suppressionDuration: rule.?suppressionDuration ?? 'PT5H'
    tactics: rule.?tactics ?? []
    techniques: [for technique in rule.?relevantTechniques ?? []: split(technique, '.')[0]]
    entityMappings: rule.?entityMappings
    customDetails: rule.?customDetails
    alertDetailsOverride: rule.?alertDetailsOverride
    eventGroupingSettings: rule.?eventGroupingSettings ?? {
      aggregationKind: 'SingleAlert'
    }
    incidentConfiguration: {
      createIncident: rule.?incidentConfiguration.?createIncident ?? true
      groupingConfiguration: {
        enabled: rule.?incidentConfiguration.?groupingConfiguration.?enabled ?? false
        reopenClosedIncident: rule.?incidentConfiguration.?groupingConfiguration.?reopenClosedIncident ?? false
        lookbackDuration: ruleDurations[i].lookbackDuration
        matchingMethod: rule.?incidentConfiguration.?groupingConfiguration.?matchingMethod ?? 'AllEntities'
        groupByEntities: rule.?incidentConfiguration.?groupingConfiguration.?groupByEntities ?? []
        groupByAlertDetails: rule.?incidentConfiguration.?groupingConfiguration.?groupByAlertDetails ?? []
        groupByCustomDetails: rule.?incidentConfiguration.?groupingConfiguration.?groupByCustomDetails ?? []
      }
    }
  }
}]

// Hunting queries, tagged the way Azure-Sentinel's solution packages tag them
// (Solutions/*/Package/mainTemplate.json: category 'Hunting Queries', version 2, tags
// description, tactics and techniques, comma-separated).
resource hunting 'Microsoft.OperationalInsights/workspaces/savedSearches@2026-03-01' = [for query in huntingQueries: if(deploySentinelItems) {
  parent: workspace
  name: query.id
  dependsOn: [
    messageTraceFunction
    vimFunction
    asimFunction
  ]
  properties: {
    category: 'Hunting Queries'
    displayName: query.name
    query: query.query
    version: 2
    tags: [
      {
        name: 'description'
        value: query.description
      }
      {
        name: 'tactics'
        value: join(query.?tactics ?? [], ',')
      }
      {
        name: 'techniques'
        value: join(query.?relevantTechniques ?? [], ',')
      }
    ]
  }
}]

// The workbook (gallery JSON). Its name must be a GUID; derived from the workspace so a
// redeploy updates it in place.
resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = if (deploySentinelItems) {
  name: guid(workspace.id, 'message-trace-connector', 'workbook')
  location: location
  tags: tags
  kind: 'shared'
  dependsOn: [
    messageTraceFunction
  ]
  properties: {
    displayName: workbookDisplayName
    category: 'sentinel'
    serializedData: string(workbookData)
    sourceId: workspace.id
    version: workbookData.version
  }
}

output watchlistDeployed bool = deployWatchlist
output ruleCount int = deployAnalyticRules ? length(analyticRules) : 0
