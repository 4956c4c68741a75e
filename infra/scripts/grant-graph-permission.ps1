<#
.SYNOPSIS
  Give the message trace connector's managed identity secretless access to Exchange
  message trace, with Microsoft Graph PowerShell. Same steps as grant-graph-permission.sh.

.DESCRIPTION
  1. Creates the service principal of Microsoft's message trace app
     8bd644d1-64a1-4d4b-ae52-2e0cbf64e373 if the tenant has none (provisioning can take hours).
  2. Assigns the Microsoft Graph application permission ExchangeMessageTrace.Read.All
     (app role 89b20d8a-76e2-4057-867b-9961f800b9a4) to the managed identity.
  3. Assigns Domain.Read.All (app role dbb9058a-0e50-45d7-ae91-66909b5d4664) the same
     way, for domain discovery (without it, runs use LOCAL_DOMAINS).
  Idempotent: what already exists is left alone.
  Needs the Microsoft.Graph.Applications module and a user who may grant Graph
  application permissions (Global Administrator, or Privileged Role Administrator +
  Application Administrator). The identity's token can take up to 24 h to carry it.

.PARAMETER PrincipalId
  Object (principal) id of the managed identity: output MANAGED_IDENTITY_PRINCIPAL_ID of
  the deployment, or `az identity list -g <rg> --query "[].principalId"`.

.EXAMPLE
  ./infra/scripts/grant-graph-permission.ps1 -PrincipalId 11111111-2222-3333-4444-555555555555
#>
[CmdletBinding()]
param(
    [Parameter(Mandatory = $true)]
    [ValidatePattern('^[0-9a-fA-F-]{36}$')]
    [string] $PrincipalId
)
$ErrorActionPreference = 'Stop'

$MicrosoftGraphAppId = '00000003-0000-0000-c000-000000000000'
$MessageTraceAppId = '8bd644d1-64a1-4d4b-ae52-2e0cbf64e373'
$MessageTraceRoleId = '89b20d8a-76e2-4057-867b-9961f800b9a4'  # ExchangeMessageTrace.Read.All
$DomainReadRoleId = 'dbb9058a-0e50-45d7-ae91-66909b5d4664'    # Domain.Read.All

Import-Module Microsoft.Graph.Applications
Connect-MgGraph -Scopes 'AppRoleAssignment.ReadWrite.All', 'Application.ReadWrite.All' -NoWelcome

# 1. The message trace app's service principal.
$traceSp = Get-MgServicePrincipal -Filter "appId eq '$MessageTraceAppId'"
if (-not $traceSp) {
    $traceSp = New-MgServicePrincipal -AppId $MessageTraceAppId
    Write-Host "created the service principal of app $MessageTraceAppId (provisioning can take several hours)"
} else {
    Write-Host "service principal of app $MessageTraceAppId exists ($($traceSp.Id))"
}

# 2. ExchangeMessageTrace.Read.All for the managed identity.
$graphSp = Get-MgServicePrincipal -Filter "appId eq '$MicrosoftGraphAppId'"
if (-not $graphSp) { throw 'Microsoft Graph service principal not found in this tenant' }
function Grant-GraphRole([string] $RoleId, [string] $Name) {
    $existing = Get-MgServicePrincipalAppRoleAssignment -ServicePrincipalId $PrincipalId -All |
        Where-Object { $_.AppRoleId -eq $RoleId -and $_.ResourceId -eq $graphSp.Id }
    if ($existing) {
        Write-Host "$Name already granted to $PrincipalId"
    } else {
        New-MgServicePrincipalAppRoleAssignment -ServicePrincipalId $PrincipalId `
            -PrincipalId $PrincipalId -ResourceId $graphSp.Id -AppRoleId $RoleId | Out-Null
        Write-Host "granted $Name to $PrincipalId (the identity's token can take up to 24 h to carry it)"
    }
}
Grant-GraphRole $MessageTraceRoleId 'ExchangeMessageTrace.Read.All'

# 3. Domain.Read.All for the managed identity (domain discovery).
Grant-GraphRole $DomainReadRoleId 'Domain.Read.All'
