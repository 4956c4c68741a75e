// Optional Key Vault (RBAC authorization, purge protection) for the app registration's
// client secret and the subject hashing key (SUBJECT_MODE hash). The function reads them
// through Key Vault references resolved with its user-assigned identity, which gets
// Key Vault Secrets User on this vault only.

@description('Vault name (3-24 characters, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Region.')
param location string

@description('Tags.')
param tags object = {}

@description('Client secret to store as "graph-client-secret"; empty leaves the secret to be set by hand.')
@secure()
param clientSecret string = ''

@description('Subject hashing key (base64 of at least 32 random bytes) to store as "subject-hash-key"; empty leaves the secret to be set by hand.')
@secure()
param subjectHashKey string = ''

@description('Name of the secret the SUBJECT_HASH_KEY app setting refers to.')
param subjectHashKeySecretName string = 'subject-hash-key'

@description('Principal (object) id of the function identity.')
param principalId string

@description('Name of the secret the CLIENT_SECRET app setting refers to.')
param secretName string = 'graph-client-secret'

// Key Vault Secrets User
var keyVaultSecretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(clientSecret)) {
  parent: vault
  name: secretName
  properties: {
    value: clientSecret
    contentType: 'Entra ID client secret of the message trace app registration'
    attributes: {
      enabled: true
    }
  }
}

resource subjectKey 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(subjectHashKey)) {
  parent: vault
  name: subjectHashKeySecretName
  properties: {
    value: subjectHashKey
    contentType: 'HMAC key of SUBJECT_MODE hash (base64); rotating it breaks subject grouping across the rotation'
    attributes: {
      enabled: true
    }
  }
}

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, keyVaultSecretsUserRoleId)
  scope: vault
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUserRoleId)
    description: 'Message trace connector: read its secrets through Key Vault references'
  }
}

output id string = vault.id
output name string = vault.name
// A Key Vault reference (not the secret): the versionless URI follows rotations within 24 h.
output clientCredentialReference string = '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${secretName}/)'
output subjectHashKeyReference string = '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${subjectHashKeySecretName}/)'
