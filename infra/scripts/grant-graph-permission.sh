#!/usr/bin/env bash
# Give the connector's managed identity secretless access to Exchange message trace, for
# deployers who cannot (or would rather not) run the Microsoft Graph Bicep extension
# (main.bicep parameter grantGraphPermission). Uses only `az rest` against Microsoft Graph.
#
#   1. creates the service principal of Microsoft's message trace app
#      8bd644d1-64a1-4d4b-ae52-2e0cbf64e373 if the tenant has none (without it Graph
#      answers 401 "Service principal-less Authentication failed"; provisioning can take hours);
#   2. assigns the Microsoft Graph application permission ExchangeMessageTrace.Read.All
#      (app role 89b20d8a-76e2-4057-867b-9961f800b9a4) to the managed identity. The app
#      role assignment is the admin-consented grant; no separate consent step;
#   3. assigns Domain.Read.All (app role dbb9058a-0e50-45d7-ae91-66909b5d4664, Graph
#      permissions reference) the same way: the connector reads the tenant's verified
#      domains for Direction (without it, runs use LOCAL_DOMAINS).
#
# Idempotent: what already exists is left alone, so running it twice changes nothing.
#
# Usage:
#   infra/scripts/grant-graph-permission.sh --resource-group <rg>     # finds the identity the deployment made
#   infra/scripts/grant-graph-permission.sh <principal-object-id>     # any managed identity / service principal
#
# Needs: `az login` (to the Exchange Online tenant) as a user who may grant Graph
# application permissions and create service principals: Global Administrator, or
# Privileged Role Administrator + Application Administrator (Graph permissions
# AppRoleAssignment.ReadWrite.All + Application.ReadWrite.All).
# A managed identity's Graph token can take up to 24 h to carry the new permission.
set -euo pipefail

GRAPH="https://graph.microsoft.com/v1.0"
MICROSOFT_GRAPH_APP_ID="00000003-0000-0000-c000-000000000000"
MESSAGE_TRACE_APP_ID="8bd644d1-64a1-4d4b-ae52-2e0cbf64e373"
MESSAGE_TRACE_ROLE_ID="89b20d8a-76e2-4057-867b-9961f800b9a4" # ExchangeMessageTrace.Read.All
DOMAIN_READ_ROLE_ID="dbb9058a-0e50-45d7-ae91-66909b5d4664"   # Domain.Read.All
IDENTITY_TAG="message-trace-connector"                        # tag `application` set by main.bicep

usage() {
  echo "usage: $0 --resource-group <rg> | <principal-object-id>" >&2
  exit 2
}

principal_id=""
case "${1:-}" in
  --resource-group | -g)
    [ -n "${2:-}" ] || usage
    principal_id="$(az identity list --resource-group "$2" \
      --query "[?tags.application=='${IDENTITY_TAG}'].principalId" -o tsv)"
    if [ -z "$principal_id" ] || [ "$(printf '%s\n' "$principal_id" | wc -l)" -ne 1 ]; then
      echo "error: expected exactly one managed identity tagged application=${IDENTITY_TAG} in $2, found: ${principal_id:-none}" >&2
      exit 1
    fi
    ;;
  -h | --help | "") usage ;;
  *) principal_id="$1" ;;
esac
if ! [[ "$principal_id" =~ ^[0-9a-fA-F-]{36}$ ]]; then
  echo "error: '$principal_id' is not a principal (object) id" >&2
  exit 2
fi

sp_id_for_app() {
  az rest --method GET \
    --uri "${GRAPH}/servicePrincipals?\$filter=appId%20eq%20'$1'&\$select=id" \
    --query "value[0].id" -o tsv
}

# 1. The message trace app's service principal.
trace_sp="$(sp_id_for_app "$MESSAGE_TRACE_APP_ID")"
if [ -z "$trace_sp" ]; then
  az rest --method POST --uri "${GRAPH}/servicePrincipals" \
    --headers "Content-Type=application/json" \
    --body "{\"appId\": \"${MESSAGE_TRACE_APP_ID}\"}" --output none
  echo "created the service principal of app ${MESSAGE_TRACE_APP_ID} (provisioning can take several hours)"
else
  echo "service principal of app ${MESSAGE_TRACE_APP_ID} exists (${trace_sp})"
fi

# 2. ExchangeMessageTrace.Read.All for the managed identity.
graph_sp="$(sp_id_for_app "$MICROSOFT_GRAPH_APP_ID")"
if [ -z "$graph_sp" ]; then
  echo "error: Microsoft Graph service principal not found in this tenant" >&2
  exit 1
fi
grant_role() { # <app role id> <permission name>
  local existing
  existing="$(az rest --method GET \
    --uri "${GRAPH}/servicePrincipals/${principal_id}/appRoleAssignments" \
    --query "value[?appRoleId=='$1' && resourceId=='${graph_sp}'].id" -o tsv)"
  if [ -n "$existing" ]; then
    echo "$2 already granted to ${principal_id}"
  else
    az rest --method POST --uri "${GRAPH}/servicePrincipals/${graph_sp}/appRoleAssignedTo" \
      --headers "Content-Type=application/json" \
      --body "{\"principalId\": \"${principal_id}\", \"resourceId\": \"${graph_sp}\", \"appRoleId\": \"$1\"}" \
      --output none
    echo "granted $2 to ${principal_id} (the identity's token can take up to 24 h to carry it)"
  fi
}
grant_role "$MESSAGE_TRACE_ROLE_ID" "ExchangeMessageTrace.Read.All"

# 3. Domain.Read.All for the managed identity (domain discovery).
grant_role "$DOMAIN_READ_ROLE_ID" "Domain.Read.All"
