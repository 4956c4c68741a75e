// Example parameters for infra/main.bicep. Copy and edit, or set the environment
// variables it reads (azd passes its environment: `azd env set LOCAL_DOMAINS contoso.com`).
//
//   LOCAL_DOMAINS=contoso.com,contoso.onmicrosoft.com \
//     az deployment group create -g rg-msgtrace -f infra/main.bicep -p infra/main.bicepparam
//
// Every parameter of main.bicep not set here keeps its default (see its @description).
using './main.bicep'

// Goes into every resource name (2-12 lower-case letters/digits). Keep it stable:
// a different value means a second, separate deployment.
param baseName = readEnvironmentVariable('MTC_BASE_NAME', 'msgtrace')

// Domains of the organisation for the Direction column, besides the verified domains the
// connector reads from Graph (needs Domain.Read.All). Optional: '' uses the discovered ones.
param localDomains = readEnvironmentVariable('LOCAL_DOMAINS', '')

// Existing workspace (for example the Sentinel one), or '' to create a new one:
// '/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.OperationalInsights/workspaces/<name>'
param existingWorkspaceResourceId = readEnvironmentVariable('EXISTING_WORKSPACE_RESOURCE_ID', '')

// 'Analytics' (full KQL, alerts, Sentinel rules) or 'Basic' (cheaper, 30 days, no alerts).
param tablePlan = 'Analytics'
param tableRetentionInDays = 90

// Secretless Graph access: the managed identity gets ExchangeMessageTrace.Read.All.
// true needs Graph admin rights for the deploying user (see infra/README.md "Grant Graph");
// false: run infra/scripts/grant-graph-permission.sh once after the deployment.
param graphAuthMode = 'managed_identity'
param grantGraphPermission = false

// After a crash, check in the workspace which rows of an unconfirmed batch arrived
// instead of resending them (Reader on EmailEvents_CL + a query-only custom role on the workspace).
param enableWorkspaceVerification = true

// Health: alert when EmailEvents_CL received nothing for this many minutes.
param noDataAlertMinutes = 60
param alertEmail = readEnvironmentVariable('ALERT_EMAIL', '')

// Client-secret mode instead (an app registration; the secret goes to Key Vault).
// Pass the secret on the command line, never in this file:
//   -p graphAuthMode=client_secret -p clientId=<app id> -p clientSecret=<secret>
// param graphAuthMode = 'client_secret'
// param clientId = '00000000-0000-0000-0000-000000000000'

// Subjects: 'keep' (default), 'hash' (HMAC under a key in Key Vault: equal subjects still
// group) or 'drop' (README "Privacy"). For hash, create the key once and pass it on the
// command line, never in this file:
//   -p subjectMode=hash -p subjectHashKey="$(openssl rand -base64 32)"
// param subjectMode = 'hash'

// Many customer tenants in one deployment (infra/README.md "Many tenants"): a multi-tenant app
// registration, admin-consented in each customer tenant, with the managed identity as its
// federated credential (federatedAppUniqueName: the deployment adds it; else az ad app
// federated-credential create). A tenant with workspaceResourceId gets its own tables and DCR there
// (a subscription of this deployment's Entra tenant); without it, it shares EmailEvents_CL.
// param graphAuthMode = 'federated_identity'
// param clientId = '00000000-0000-0000-0000-000000000000'
// param federatedAppUniqueName = 'message-trace-connector'
// param tenants = [
//   { name: 'contoso', tenantId: '00000000-0000-0000-0000-000000000001' }
//   {
//     name: 'fabrikam'
//     tenantId: '00000000-0000-0000-0000-000000000002'
//     workspaceResourceId: '/subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.OperationalInsights/workspaces/<name>'
//     localDomains: [ 'fabrikam.com' ]
//   }
// ]
