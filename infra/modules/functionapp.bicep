// The Flex Consumption function app (Linux, Python 3.11) that runs the timer.
// It runs as the user-assigned identity: host storage, deployment package, Key Vault
// references and the connector's own clients all use it. No storage keys, no
// FUNCTIONS_WORKER_RUNTIME (Flex takes the runtime from functionAppConfig).

@description('Function app name.')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Region.')
param location string

@description('Tags (main.bicep adds azd-service-name).')
param tags object = {}

@description('Resource id of the user-assigned identity.')
param identityResourceId string

@description('Client id of the user-assigned identity.')
param identityClientId string

@description('Storage account for AzureWebJobsStorage and the deployment package.')
param storageAccountName string

@description('Blob container for the Flex deployment package.')
param deploymentContainerName string

@description('Application Insights connection string.')
param appInsightsConnectionString string

@description('Connector settings (README "Settings"), already complete.')
param connectorSettings object

@description('Maximum instances (Flex Consumption: 40-1000 outside preview regions).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Instance memory (MB).')
param instanceMemoryMB int = 2048

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

// Platform settings: identity-based host storage and Application Insights.
var platformSettings = {
  AzureWebJobsStorage__accountName: storageAccount.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsightsConnectionString
}

// The connector's settings, then the platform's. Everything in this object is known when
// this module starts (parameters only), so it can drive the appSettings loop below.
var appSettings = union(connectorSettings, platformSettings)

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityResourceId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    keyVaultReferenceIdentity: identityResourceId
    siteConfig: {
      // Only what the Azure-Samples Flex templates set: Flex Consumption refuses
      // ftpsState ("FTPS not supported", Flex deprecations in functions-app-settings) and
      // the samples set no http20Enabled either. minTlsVersion: the platform default (1.2).
      appSettings: [for setting in items(appSettings): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storageAccount.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityResourceId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Publishing with user name and password is off: azd / func publish use Entra ID tokens.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

output id string = site.id
output name string = site.name
output defaultHostName string = site.properties.defaultHostName
