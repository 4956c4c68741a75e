// graphAuthMode federated_identity: the function's managed identity becomes a federated identity
// credential of the multi-tenant app registration the connector signs in as (CLIENT_ID), with the
// Microsoft Graph Bicep extension (infra/bicepconfig.json, Bicep >= 0.36.1). The connector then
// asks the managed identity for a token for api://AzureADTokenExchange and presents it as the
// client assertion of that app in each customer tenant: no secret, no certificate.
//   issuer   https://login.microsoftonline.com/<tenant of the managed identity>/v2.0
//   subject  the managed identity's principal (object) id
//   audience api://AzureADTokenExchange
// The app is found by its uniqueName (the Graph extension's only key for an application), so it
// must have been created with one (e.g. by Bicep); an app without one gets the credential with
// `az ad app federated-credential create` instead (infra/README.md "Many tenants"). The deploying
// user needs Application.ReadWrite.All (delegated) or ownership of the app. An app holds at most
// 20 federated identity credentials.
// Admin consent in each customer tenant is not a deployment step (infra/README.md "Many tenants").
// checkov skips this file (infra/.checkov.yaml): its pycep-parser 0.5.1 cannot parse `extension`.

extension microsoftGraphV1

@description('uniqueName of the multi-tenant app registration.')
param appUniqueName string

@description('Application (client) id the connector uses (CLIENT_ID): the deployment fails when the app found by appUniqueName has another one.')
param clientId string

@description('Principal (object) id of the function app\'s managed identity: the credential\'s subject.')
param principalId string

@description('Entra tenant of the managed identity: the credential\'s issuer.')
param identityTenantId string

@description('Name of the credential (unique in the app, at most 120 URL-friendly characters).')
@maxLength(120)
param credentialName string

var tokenExchangeAudience = 'api://AzureADTokenExchange'

resource app 'Microsoft.Graph/applications@v1.0' existing = {
  uniqueName: appUniqueName

  // A child of an application is named '<application uniqueName>/<credential name>'.
  resource managedIdentityCredential 'federatedIdentityCredentials@v1.0' = {
    name: '${app.uniqueName}/${credentialName}'
    description: 'Message trace connector: the function app\'s managed identity signs in as this app in every customer tenant'
    issuer: '${environment().authentication.loginEndpoint}${identityTenantId}/v2.0'
    subject: principalId
    audiences: [
      tokenExchangeAudience
    ]
  }
}

output appId string = app.appId == clientId ? app.appId : fail('The app registration with uniqueName ${appUniqueName} has appId ${app.appId}, not clientId ${clientId}: the managed identity would be a credential of an app the connector does not use.')
output credentialName string = credentialName
output issuer string = app::managedIdentityCredential.issuer
output subject string = app::managedIdentityCredential.subject
