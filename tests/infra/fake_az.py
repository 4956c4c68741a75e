"""A stand-in for the Azure CLI, just enough of `az rest` / `az identity list` for the grant script.

State (a JSON file named by FAKE_AZ_STATE) holds the tenant's service principals, app
role assignments and managed identities; every call is appended to FAKE_AZ_LOG.
Graph's own behaviour is kept where it matters: a duplicate app role assignment is
refused with 400, like Graph does, so a script that is not idempotent fails.
"""

import json
import os
import re
import sys
import uuid
from pathlib import Path

GRAPH = "https://graph.microsoft.com/v1.0"


def _arg(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def main(args: list[str]) -> int:
    state_path = Path(os.environ["FAKE_AZ_STATE"])
    state = json.loads(state_path.read_text())
    with Path(os.environ["FAKE_AZ_LOG"]).open("a") as log:
        log.write(json.dumps(args) + "\n")
    query = _arg(args, "--query")

    if args[:2] == ["identity", "list"]:
        rg = _arg(args, "--resource-group")
        tag = re.fullmatch(r"\[\?tags\.application=='([^']+)'\]\.principalId", query or "")
        assert tag, query
        ids = [
            i["principalId"]
            for i in state["identities"].get(rg, [])
            if i["tags"].get("application") == tag[1]
        ]
        print("\n".join(ids))
        return 0

    assert args[0] == "rest", args
    method = _arg(args, "--method")
    uri = _arg(args, "--uri") or ""
    if method == "GET":
        by_app = re.fullmatch(
            re.escape(GRAPH) + r"/servicePrincipals\?\$filter=appId%20eq%20'([^']+)'&\$select=id", uri
        )
        if by_app:
            assert query == "value[0].id", query
            found = [sp["id"] for sp in state["servicePrincipals"] if sp["appId"] == by_app[1]]
            print(found[0] if found else "")
            return 0
        assignments = re.fullmatch(re.escape(GRAPH) + r"/servicePrincipals/([^/]+)/appRoleAssignments", uri)
        if assignments:
            wanted = re.fullmatch(
                r"value\[\?appRoleId=='([^']+)' && resourceId=='([^']+)'\]\.id", query or ""
            )
            assert wanted, query
            ids = [
                a["id"]
                for a in state["assignments"]
                if a["principalId"] == assignments[1]
                and a["appRoleId"] == wanted[1]
                and a["resourceId"] == wanted[2]
            ]
            print("\n".join(ids))
            return 0
    if method == "POST":
        payload = json.loads(_arg(args, "--body") or "{}")
        if uri == f"{GRAPH}/servicePrincipals":
            if any(sp["appId"] == payload["appId"] for sp in state["servicePrincipals"]):
                print("Bad Request: service principal already exists", file=sys.stderr)
                return 1
            state["servicePrincipals"].append({"id": str(uuid.uuid4()), "appId": payload["appId"]})
        elif re.fullmatch(re.escape(GRAPH) + r"/servicePrincipals/[^/]+/appRoleAssignedTo", uri):
            key = (payload["principalId"], payload["resourceId"], payload["appRoleId"])
            if any((a["principalId"], a["resourceId"], a["appRoleId"]) == key for a in state["assignments"]):
                print("Bad Request: Permission being assigned already exists on the object", file=sys.stderr)
                return 1
            principal, resource, role = key
            state["assignments"].append(
                {"id": str(uuid.uuid4()), "principalId": principal, "resourceId": resource, "appRoleId": role}
            )
        else:
            raise AssertionError(uri)
        state_path.write_text(json.dumps(state))
        return 0
    raise AssertionError(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
