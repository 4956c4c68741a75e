// Health: a log alert that fires when the table received no row for `windowMinutes`.
// Deployed for the Analytics plan only (Basic tables do not support alerts).

@description('Alert rule name.')
param name string

@description('Action group name (created only when alertEmail is set).')
param actionGroupName string

@description('Region: the workspace region.')
param location string

@description('Tags.')
param tags object = {}

@description('Workspace the rule queries.')
param workspaceResourceId string

@description('Table that must keep receiving rows.')
param tableName string

@description('No row for this many minutes fires the alert.')
param windowMinutes int = 60

@description('E-mail address to notify; empty = no action group.')
param alertEmail string = ''

var notify = !empty(alertEmail)
var evaluationMinutes = windowMinutes < 15 ? windowMinutes : 15

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (notify) {
  name: actionGroupName
  location: 'Global'
  tags: tags
  properties: {
    groupShortName: 'msgtrace'
    enabled: true
    emailReceivers: [
      {
        name: 'connector-owner'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

resource noData 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: name
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: '${tableName} receives no rows'
    description: 'The message trace connector stored nothing in ${tableName} for ${windowMinutes} minutes: check the function app (Application Insights failures), the Graph permission and the DCR role.'
    severity: 2
    enabled: true
    scopes: [
      workspaceResourceId
    ]
    evaluationFrequency: 'PT${evaluationMinutes}M'
    windowSize: 'PT${windowMinutes}M'
    criteria: {
      allOf: [
        {
          query: tableName
          timeAggregation: 'Count'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: notify ? [
        actionGroup.id
      ] : []
    }
  }
}

output id string = noData.id
